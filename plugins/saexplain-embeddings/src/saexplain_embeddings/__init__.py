"""saexplain-embeddings: the `embedding` scorer.

The explanation is a retrieval query over the latent's held-out contexts; the score is the AUROC
of cosine similarity between activating and non-activating contexts. Importing this module stays
light: sentence-transformers (and torch) are imported when the model is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain_embeddings.scorer import EmbeddingScorer

__all__ = ["make_embedding_scorer", "register_scorers"]


def make_embedding_scorer(**settings: Any) -> EmbeddingScorer:
    """Scorer factory `embedding` (settings: see `EmbeddingScorer`)."""
    from saexplain_embeddings.scorer import EmbeddingScorer

    return EmbeddingScorer(**settings)


@hookimpl
def register_scorers(register: Register) -> None:
    register(
        "embedding",
        make_embedding_scorer,
        description="The explanation as a retrieval query over contexts "
        "(sentence-transformers, default all-MiniLM-L6-v2 offline); AUROC.",
    )
