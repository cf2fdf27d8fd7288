"""saexplain-saelens: SAELens SAEs (every architecture, and transcoders) and MLP neurons as
saexplain sparse coders, plus the torch backend core the TransformerLens and nnsight backends share.

Importing this module stays light: torch and sae_lens load only when a coder is built
(`from saexplain_saelens import SAELensCoder` triggers that import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain_saelens.coders import Neurons, SAELensCoder, as_coder

__all__ = ["Neurons", "SAELensCoder", "as_coder", "detect_backend", "register_coders"]


def __getattr__(name: str) -> Any:
    if name in ("Neurons", "SAELensCoder", "as_coder"):
        from saexplain_saelens import coders

        return getattr(coders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def detect_backend(model: object) -> str | None:
    """SAELens's HookedSAETransformer is a HookedTransformer: the TransformerLens backend
    runs it."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("sae_lens") and cls.__name__ == "HookedSAETransformer":
            return "transformerlens"
    return None


@hookimpl
def register_coders(register: Register) -> None:
    from saexplain_saelens import sources

    register(
        "saelens",
        sources.saelens_coder,
        description="SAELens SAE: '<release>/<sae_id>', a local SAE folder, or an SAE object",
    )
    register("neurons", sources.neurons_coder, description="MLP neurons: 'blocks.L.mlp.hook_post'")
    register("demo", sources.demo_coder, description="the demo's SAE on SmolLM2 (cached)")
