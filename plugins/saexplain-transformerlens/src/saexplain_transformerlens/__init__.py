"""saexplain-transformerlens: a saexplain backend over TransformerLens models.

Importing this module stays light: torch and transformer_lens load only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

NAME = "transformerlens"
_CLASSES = {"HookedTransformer"}  # TransformerBridge: not yet verified


def make_backend(model: Any, **settings: Any) -> Any:
    """Backend factory: a HookedTransformer or HookedSAETransformer, or a model name that
    `HookedSAETransformer.from_pretrained` knows."""
    from saexplain_transformerlens.backend import TransformerLensBackend

    if isinstance(model, str):
        from sae_lens import HookedSAETransformer

        settings.setdefault("model_id", model)
        model = HookedSAETransformer.from_pretrained(model)
    return TransformerLensBackend(model, **settings)


@hookimpl
def register_backends(register: Register) -> None:
    register(NAME, make_backend, description="HookedTransformer / HookedSAETransformer")


@hookimpl
def detect_backend(model: object) -> str | None:
    """HookedTransformer and its subclasses (HookedSAETransformer, user subclasses)."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformer_lens") and cls.__name__ in _CLASSES:
            return NAME
    return None
