"""The Neuronpedia and delphi exports, kept importable here; they live in `saexplain.interop`
(`interop/neuronpedia.py`, `interop/delphi.py`), beside the importers and the other formats."""

from __future__ import annotations

from saexplain.interop._common import EXPORT_MANIFEST, ExportGapWarning
from saexplain.interop.delphi import (
    DEFAULT_ITEM_LAYOUT,
    ITEM_SOURCES,
    delphi_records,
    export_delphi,
    item_examples,
)
from saexplain.interop.neuronpedia import (
    SUBJECT_MODEL_EXPLAINERS,
    export_neuronpedia,
    neuronpedia_type_name,
)

__all__ = [
    "DEFAULT_ITEM_LAYOUT",
    "EXPORT_MANIFEST",
    "ITEM_SOURCES",
    "SUBJECT_MODEL_EXPLAINERS",
    "ExportGapWarning",
    "delphi_records",
    "export_delphi",
    "export_neuronpedia",
    "item_examples",
    "neuronpedia_type_name",
]
