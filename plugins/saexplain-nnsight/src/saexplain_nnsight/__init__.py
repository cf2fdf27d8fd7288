"""saexplain-nnsight: a saexplain backend over nnsight models and plain transformers models.

Importing this module stays light: torch and nnsight load only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

NAME = "nnsight"


def make_backend(model: Any, **settings: Any) -> Any:
    """Backend factory: an nnsight TransformersModel (or a LanguageModel, nnsight's deprecated
    name for it), a transformers causal LM (then pass `tokenizer=`), or a hub model name or
    local folder, loaded with `nnsight.TransformersModel(name, task="text-generation")`."""
    from saexplain_nnsight.backend import NNsightBackend

    if isinstance(model, str):
        settings.setdefault("model_id", model)
        return NNsightBackend(_load(model), **settings)
    return NNsightBackend(model, **settings)


def _load(name: str) -> Any:
    """A causal LM by hub name or folder, through nnsight's current entry point; a model that
    cannot be loaded is a one-line `ConfigError`, at once when the hub cannot be reached."""
    from nnsight import TransformersModel

    from saexplain.hub import check_hub_access, hub_load_error

    check_hub_access("model", name)
    try:
        return TransformersModel(name, task="text-generation", dispatch=True)
    except (OSError, ValueError) as e:  # not found, no hub access, not a model folder
        raise hub_load_error("model", name, e) from e


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
