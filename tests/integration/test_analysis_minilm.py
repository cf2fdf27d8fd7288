"""Explanation similarity and search with the real MiniLM embedder of saexplain-embeddings."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("sentence_transformers")
pytest.importorskip("saexplain_embeddings")

from saexplain.analysis import compare_explanations, default_embedder, match_exact, search
from saexplain.models import Explanation, LatentRef
from saexplain.report.results import RunResults

PAIRS = [
    ("mentions of cats and kittens", "words about pet cats"),
    ("Python source code", "programming language syntax"),
    ("prices and money", "financial amounts in dollars"),
    ("rivers and lakes", "bodies of fresh water"),
    ("musical instruments", "guitars, pianos and violins"),
    ("dates and years", "calendar years like 1999"),
]


def test_matched_explanations_beat_random_pairs_with_minilm():
    embed = default_embedder()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(len(PAIRS), 16))
    perm = rng.permutation(len(PAIRS))
    b = np.empty_like(a)
    b[perm] = a + 0.1 * rng.normal(size=a.shape)
    m = match_exact(a, b)
    exp_a = {i: PAIRS[i][0] for i in range(len(PAIRS))}
    exp_b = {int(perm[i]): PAIRS[i][1] for i in range(len(PAIRS))}
    cmp = compare_explanations(m, exp_a, exp_b, embed)
    assert cmp.mean_similarity is not None and cmp.baseline is not None
    assert cmp.mean_similarity > cmp.baseline + 0.15, (cmp.mean_similarity, cmp.baseline)

    ref = lambda i: LatentRef(coder_id="sae", hook="h", index=i)  # noqa: E731
    run = RunResults(
        explanations=[
            Explanation(latent=ref(i), explainer="maxact", text=t) for i, (t, _) in enumerate(PAIRS)
        ]
    )
    assert search(run, "a violin concerto", k=1)[0].latent.index == 4
