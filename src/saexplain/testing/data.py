"""Test data: pseudo-text corpora and latent records built from whole texts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saexplain.models import (
    Example,
    LatentRecord,
    LatentRef,
    LatentStats,
)
from saexplain.protocols import (
    SparseCoder,
)
from saexplain.testing.fakes import FakeBackend


def synthetic_corpus(
    n_docs: int,
    *,
    seed: int = 0,
    vocab: Sequence[str] | None = None,
    min_words: int = 5,
    max_words: int = 60,
) -> list[str]:
    """Deterministic pseudo-text: `n_docs` documents of random words drawn from `vocab`."""
    words = list(vocab) if vocab is not None else [f"w{i}" for i in range(200)]
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(min_words, max_words + 1))
        docs.append(" ".join(words[i] for i in rng.integers(0, len(words), size=n)))
    return docs


def make_record(
    backend: FakeBackend,
    coder: SparseCoder,
    latent: int,
    texts: Sequence[str],
    *,
    n_explain: int | None = None,
) -> LatentRecord:
    """A LatentRecord from whole texts: those where the latent fires are activating examples
    (split alternately into explanation and scoring sets), the rest non-activating."""
    tokens = backend.tokenize(texts)
    acts = backend.latent_acts(tokens, [coder], latents={coder.id: [latent]})[coder.id]
    dense = np.zeros(tokens.shape, dtype=np.float64)
    dense[acts.row, acts.pos] = acts.value
    active: list[Example] = []
    inactive: list[Example] = []
    for r, ids in enumerate(tokens.rows()):
        ex = Example(
            tokens=tuple(ids),
            str_tokens=tuple(backend.str_tokens(ids)),
            activations=tuple(float(v) for v in dense[r, : len(ids)]),
            row=r,
            start=0,
        )
        (active if ex.max_activation > 0 else inactive).append(ex)
    values = acts.value[acts.latent == latent]
    n_tokens = int(tokens.mask.sum())
    stats = LatentStats(
        n_tokens=n_tokens,
        count=len(values),
        max=float(values.max()) if len(values) else 0.0,
        mean=float(values.mean()) if len(values) else 0.0,
    )
    explain = active[0::2] if n_explain is None else active[:n_explain]
    score = active[1::2] if n_explain is None else active[n_explain:]
    negatives = tuple(e.model_copy(update={"kind": "random"}) for e in inactive)
    return LatentRecord(
        latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=latent),
        stats=stats,
        explanation_examples=tuple(explain),
        scoring_examples=tuple(score),
        non_activating=negatives,
        sampling={"source": "saexplain.testing.make_record"},
    )
