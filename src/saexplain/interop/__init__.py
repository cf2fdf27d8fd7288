"""Interop: the formats of the field, both ways (one module per format).

    from saexplain.interop import load_neuronpedia_explanations
    imported = load_neuronpedia_explanations("exports/gpt2-small/8-res-jb")
    sx.score(model, sae, imported.given(source="8-res-jb"), scorers=["detection"])

| format | export | import |
|---|---|---|
| Neuronpedia explanation batches | `export_neuronpedia` | `load_neuronpedia_explanations` |
| SAEBench autointerp results JSON | `export_saebench` | `load_saebench` |
| delphi results layout | `export_delphi` | `load_delphi_explanations`, `load_delphi_scores` |
| neuron-explainer | `export_neuron_record`, `..._explanations` | `load_neuron_record`, `...` |
| pandas / parquet | `to_pandas`, `to_parquet` (`RunResults.to_pandas/to_parquet`) | - |

Imported explanations are `ImportedExplanations`, keyed by (source, latent index); `.given()`
is what the `given` explainer (`sx.score`) takes. Malformed input raises `InteropFormatError`
(a `ConfigError`) naming the file and the problem. Not imported by `import saexplain`.
"""

from __future__ import annotations

from saexplain.interop._common import (
    EXPORT_MANIFEST,
    ExportGapWarning,
    ImportedExplanation,
    ImportedExplanations,
    InteropFormatError,
)
from saexplain.interop.delphi import (
    DelphiScore,
    delphi_records,
    export_delphi,
    item_examples,
    load_delphi_explanations,
    load_delphi_scores,
)
from saexplain.interop.neuron_explainer import (
    export_neuron_explanations,
    export_neuron_record,
    load_neuron_explanations,
    load_neuron_record,
)
from saexplain.interop.neuronpedia import (
    export_neuronpedia,
    load_neuronpedia_explanations,
    neuronpedia_type_name,
)
from saexplain.interop.saebench import (
    SAEBenchLatent,
    SAEBenchResults,
    export_saebench,
    load_saebench,
)
from saexplain.interop.tables import to_pandas, to_parquet

__all__ = [
    "EXPORT_MANIFEST",
    "DelphiScore",
    "ExportGapWarning",
    "ImportedExplanation",
    "ImportedExplanations",
    "InteropFormatError",
    "SAEBenchLatent",
    "SAEBenchResults",
    "delphi_records",
    "export_delphi",
    "export_neuron_explanations",
    "export_neuron_record",
    "export_neuronpedia",
    "export_saebench",
    "item_examples",
    "load_delphi_explanations",
    "load_delphi_scores",
    "load_neuron_explanations",
    "load_neuron_record",
    "load_neuronpedia_explanations",
    "load_saebench",
    "neuronpedia_type_name",
    "to_pandas",
    "to_parquet",
]
