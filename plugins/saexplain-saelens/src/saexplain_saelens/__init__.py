"""saexplain-saelens: SAELens SAEs (every architecture, and transcoders) as saexplain sparse
coders: the `saelens:` coder source, and a `detect_coder` answer for SAELens objects and names.

Importing this module stays light: torch and sae_lens load only when a coder is built
(`from saexplain_saelens import SAELensCoder` triggers that import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain_saelens.coders import SAELensCoder, as_coder

__all__ = ["SAELensCoder", "as_coder", "detect_coder", "register_coders"]

NAME = "saelens"


def __getattr__(name: str) -> Any:
    if name in ("SAELensCoder", "as_coder"):
        from saexplain_saelens import coders

        return getattr(coders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _saelens_coder(spec: Any, *, backend: Any = None, **settings: Any) -> Any:
    from saexplain_saelens.sources import saelens_coder

    return saelens_coder(spec, backend=backend, **settings)


@hookimpl
def register_coders(register: Register) -> None:
    register(
        NAME,
        _saelens_coder,
        description="SAELens SAE: '<release>/<sae_id>', a local SAE folder, or an SAE object",
    )


@hookimpl
def detect_coder(coder: object) -> str | None:
    """`saelens` for a SAELens SAE object, a `(release, sae_id)` pair, a bare
    `'<release>/<sae_id>'` string or a folder SAELens saved; decided without importing sae_lens."""
    from saexplain_saelens.sources import looks_like_saelens

    return NAME if looks_like_saelens(coder) else None
