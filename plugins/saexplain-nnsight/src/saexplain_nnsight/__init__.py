"""saexplain-nnsight: a saexplain backend over nnsight models and plain transformers models.

Importing this module stays light: torch and nnsight load only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

NAME = "nnsight"


def make_backend(model: Any, **settings: Any) -> Any:
    """Backend factory: an nnsight LanguageModel/TransformersModel, a transformers causal LM
    (then pass `tokenizer=`), or any model name or path `nnsight.LanguageModel` loads."""
    from saexplain_nnsight.backend import NNsightBackend

    if isinstance(model, str):
        from nnsight import LanguageModel

        settings.setdefault("model_id", model)
        return NNsightBackend(LanguageModel(model, dispatch=True), **settings)
    return NNsightBackend(model, **settings)


@hookimpl
def register_backends(register: Register) -> None:
    register(NAME, make_backend, description="nnsight models and plain transformers causal LMs")


@hookimpl
def detect_backend(model: object) -> str | None:
    module = type(model).__module__
    if module.startswith("nnsight.modeling"):
        return NAME
    if module.startswith("transformers.models.") and type(model).__name__.endswith("ForCausalLM"):
        return NAME
    if module.startswith("transformers.models.") and type(model).__name__ == "GPT2LMHeadModel":
        return NAME
    return None
