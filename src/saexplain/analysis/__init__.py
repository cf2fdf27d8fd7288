"""Analyses of a whole coder beside the explain/score pipeline.

- `filters`: per-latent flags from the activation store (dead / rare, positional, unigram),
  computed before any LLM call; a run config's `filters:` section skips flagged latents.
- `similarity`: match the latents of two coders on decoder cosine (Hungarian, or blockwise top-k
  with a sparse matching for wide coders) and compare the explanations of matched pairs.
- `search`: semantic search over a run's explanations.

The matching needs scipy (`pip install 'saexplain[analysis]'`); search and explanation similarity
need an embedder (the `saexplain-embeddings` plugin, or any `embed(texts) -> array` callable).
"""

from __future__ import annotations

from saexplain.analysis.filters import FilterConfig, LatentFilters, compute_filters
from saexplain.analysis.search import Hit, default_embedder, explanations_of, search
from saexplain.analysis.similarity import (
    Comparison,
    Matching,
    compare_explanations,
    compare_runs,
    match_blockwise,
    match_coders,
    match_exact,
)

__all__ = [
    "Comparison",
    "FilterConfig",
    "Hit",
    "LatentFilters",
    "Matching",
    "compare_explanations",
    "compare_runs",
    "compute_filters",
    "default_embedder",
    "explanations_of",
    "match_blockwise",
    "match_coders",
    "match_exact",
    "search",
]
