"""The two stacks the torch backend core serves, each wrapping a transformers model and its
tokenizer: the plugin tests run every method on both (skipped when a stack is not installed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def transformerlens(hf: Any, tok: Any) -> Any:
    tl = pytest.importorskip("saexplain_transformerlens.backend")
    convert = pytest.importorskip("saexplain_transformerlens.convert")
    return tl.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok))


def nnsight(hf: Any, tok: Any) -> Any:
    nn = pytest.importorskip("saexplain_nnsight.backend")
    return nn.NNsightBackend(hf, tokenizer=tok)


BACKENDS: dict[str, Callable[[Any, Any], Any]] = {
    "transformerlens": transformerlens,
    "nnsight": nnsight,
}
