"""Methods that read the subject model: requiring a backend and coder, arrays, the logit lens.

The backend and coder come from the method context (`ctx.backend`, `ctx.coder`); a method never
imports a model stack. Arrays a backend returns (torch tensors for the bundled backends) become
numpy through `to_numpy`, which never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue

from saexplain.methods.llm import EvidenceUnavailable
from saexplain.protocols import Backend, MethodContext, SparseCoder
from saexplain.render import clean_token

__all__ = ["TokenScore", "logit_lens", "require_model", "to_numpy", "top_tokens"]


def require_model(ctx: MethodContext, method: str) -> tuple[Backend, SparseCoder]:
    """The context's backend and coder, or `EvidenceUnavailable` naming what is missing."""
    if ctx.backend is None or ctx.coder is None:
        missing = [n for n, v in (("backend", ctx.backend), ("coder", ctx.coder)) if v is None]
        raise EvidenceUnavailable(
            f"{method} needs a backend and a sparse coder in the method context "
            f"(missing: {', '.join(missing)})"
        )
    return ctx.backend, ctx.coder


def to_numpy(x: Any, dtype: type[np.floating[Any]] = np.float64) -> npt.NDArray[Any]:
    """A numpy copy of a numpy array or a tensor-like value, without importing torch."""
    # Imported here: the store imports this package (for `derive_seed`), so a module-level
    # import would be circular.
    from saexplain.store._io import to_numpy as as_array

    return np.asarray(as_array(x), dtype=dtype)


@dataclass(frozen=True)
class TokenScore:
    """A vocabulary token with a score (a logit, a change of logit)."""

    id: int
    token: str  # cleaned display text
    value: float

    def json(self) -> dict[str, JsonValue]:
        """The token as recorded in an explanation's evidence."""
        return {"id": self.id, "token": self.token, "value": round(self.value, 4)}


def top_tokens(
    backend: Backend, scores: npt.NDArray[Any], k: int, *, largest: bool = True
) -> tuple[list[TokenScore], int]:
    """The `k` best-scoring token ids that decode to a non-empty string, and how many ids were
    skipped because the backend cannot decode them (padded vocabularies, unused ids)."""
    order = np.argsort(-scores if largest else scores, kind="stable")
    found: list[TokenScore] = []
    skipped = 0
    for i in order.tolist():
        if len(found) >= k:
            break
        try:
            (text,) = backend.str_tokens([int(i)])
        except (IndexError, KeyError, ValueError):
            skipped += 1
            continue
        text = clean_token(text)
        if not text:
            skipped += 1
            continue
        found.append(TokenScore(int(i), text, float(scores[i])))
    return found, skipped


def logit_lens(backend: Backend, coder: SparseCoder, latent: int) -> npt.NDArray[np.float64]:
    """The decoder direction of `latent` through the final norm and unembedding."""
    if not 0 <= latent < coder.d_sae:
        raise EvidenceUnavailable(f"latent {latent} is outside [0, {coder.d_sae}) of {coder.id}")
    return to_numpy(backend.unembed(coder.W_dec[latent])).reshape(-1)
