"""Semantic search over a run's explanations, and reading explanations and decoders from runs.

`search(run, "query", k=10)` embeds the query and every ok explanation of the run and returns the
`k` most similar, best first. The embedder is any `embed(texts) -> (n, dim) array` callable; by
default the `embedding` scorer of the `saexplain-embeddings` plugin (all-MiniLM-L6-v2, offline),
found through the scorer registry, so the core never imports the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saexplain.errors import ConfigError

if TYPE_CHECKING:
    from saexplain.models import LatentRef
    from saexplain.report.results import RunResults

Embedder = Callable[[Sequence[str]], Any]


def default_embedder() -> Embedder:
    """The embeddings plugin's sentence embedder, or a `ConfigError` saying how to install it."""
    from saexplain.plugins import get_plugin_manager

    scorers = get_plugin_manager().scorers
    if "embedding" not in scorers:
        raise ConfigError(
            "semantic search and explanation similarity need an embedder: "
            "pip install saexplain-embeddings (or pass embed=...)"
        )
    scorer = scorers.create("embedding")
    embed = getattr(scorer, "embed_contexts", None)
    if not callable(embed):
        raise ConfigError("the registered `embedding` scorer has no embed_contexts(texts) method")
    out: Embedder = embed
    return out


def as_results(run: RunResults | str | Path) -> RunResults:
    from saexplain.report.results import RunResults

    return run if isinstance(run, RunResults) else RunResults.load(run)


def explanations_of(
    run: RunResults | str | Path, *, explainer: str | None = None, coder_id: str | None = None
) -> dict[LatentRef, str]:
    """The ok explanation of each latent by `explainer` (default: the run's first explainer)."""
    results = as_results(run)
    if not results.explainers:
        return {}
    name = explainer or results.explainers[0]
    if name not in results.explainers:
        raise ConfigError(f"the run has no explainer {name!r}; it has {results.explainers}")
    out: dict[LatentRef, str] = {}
    for ref in results.latents:
        if coder_id is not None and ref.coder_id != coder_id:
            continue
        text = results.result(ref).explanation(name)
        if text:
            out[ref] = text
    return out


@dataclass(frozen=True)
class Hit:
    """One search result."""

    latent: LatentRef
    explanation: str
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {
            "coder_id": self.latent.coder_id,
            "latent": self.latent.index,
            "explanation": self.explanation,
            "similarity": round(self.similarity, 6),
        }


def search(
    run: RunResults | str | Path,
    query: str,
    k: int = 10,
    *,
    embed: Embedder | None = None,
    explainer: str | None = None,
) -> list[Hit]:
    """The `k` explanations of `run` nearest to `query` in embedding space, best first."""
    if not query.strip():
        raise ConfigError("the search query is empty")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    found = explanations_of(run, explainer=explainer)
    if not found:
        return []
    fn = embed or default_embedder()
    refs, texts = list(found), list(found.values())
    vecs = np.asarray(fn([query, *texts]), dtype=np.float64)
    if vecs.shape[0] != len(texts) + 1:
        raise ConfigError(f"the embedder returned {vecs.shape[0]} vectors for {len(texts) + 1}")
    norms = np.linalg.norm(vecs, axis=1)
    norms[norms == 0] = 1.0
    unit = vecs / norms[:, None]
    sims = unit[1:] @ unit[0]
    order = np.argsort(-sims, kind="stable")[:k]
    return [Hit(refs[i], texts[i], float(sims[i])) for i in order]
