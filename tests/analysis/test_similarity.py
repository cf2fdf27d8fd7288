"""Matching two coders on decoder cosine, and comparing the explanations of matched pairs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("scipy")

from saexplain.analysis.similarity import (
    compare_explanations,
    match_blockwise,
    match_coders,
    match_exact,
    top_k_candidates,
    unit_rows,
)
from saexplain.errors import ConfigError, DimensionMismatchError
from tests.analysis.planted import hash_embed


def permuted_pair(d_sae: int, d_model: int, noise: float, seed: int = 0):
    """Decoder A, and B = A with permuted rows plus noise; perm[i] is the row of B holding A[i]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d_sae, d_model))
    perm = rng.permutation(d_sae)
    b = np.empty_like(a)
    b[perm] = a + noise * rng.normal(size=a.shape)
    return a, b, perm


@pytest.mark.parametrize("matcher", [match_exact, match_blockwise])
def test_a_permuted_noisy_copy_is_matched_back_exactly(matcher):
    a, b, perm = permuted_pair(512, 64, noise=0.3)
    m = matcher(a, b)
    assert len(m) == 512
    np.testing.assert_array_equal(m.a, np.arange(512))
    np.testing.assert_array_equal(m.b, perm)
    assert m.cosine.min() > 0.8


def test_blockwise_equals_exact():
    a, b, _ = permuted_pair(300, 32, noise=0.5, seed=1)
    exact = match_exact(a, b)
    blockwise = match_blockwise(a, b, k=4)
    np.testing.assert_array_equal(blockwise.b, exact.b)
    assert blockwise.method == "blockwise" and exact.method == "exact"


def test_blockwise_never_builds_the_full_matrix():
    a, b, perm = permuted_pair(3000, 16, noise=0.1, seed=4)
    full_bytes = 3000 * 3000 * 4  # the float32 cosine matrix match_exact builds
    tracemalloc.start()
    try:
        m = match_blockwise(a, b, k=4, block=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(m.b, perm)
    assert peak < full_bytes / 2, peak


def test_blockwise_blocks_bound_the_similarity_matrix():
    a, b, _ = permuted_pair(100, 16, noise=0.1, seed=2)
    ua, ub = unit_rows(a), unit_rows(b)
    _idx, val = top_k_candidates(ua, ub, 3, block=7)
    full = ua @ ub.T
    np.testing.assert_allclose(np.sort(val, axis=1), np.sort(full, axis=1)[:, -3:], atol=1e-5)


def test_blockwise_finishes_when_top_k_has_no_full_matching():
    # every row of A is closest to the same row of B: a top-1 graph cannot match them all
    rng = np.random.default_rng(3)
    b = rng.normal(size=(20, 8))
    a = b[0] + 0.01 * rng.normal(size=(20, 8))
    m = match_blockwise(a, b, k=1)
    assert sorted(m.b.tolist()) == list(range(20))


def test_different_widths_match_the_smaller_side_fully():
    a, b, _ = permuted_pair(64, 16, noise=0.1)
    wide = np.vstack([b, np.random.default_rng(9).normal(size=(64, 16))])
    for m in (match_exact(a, wide), match_blockwise(a, wide), match_blockwise(wide, a)):
        assert len(m) == 64 and len(set(m.b.tolist())) == 64


def test_auto_switches_on_size_and_bad_input_is_refused():
    a, b, _ = permuted_pair(32, 8, noise=0.1)
    assert match_coders(a, b).method == "exact"
    assert match_coders(a, b, exact_limit=10).method == "blockwise"
    with pytest.raises(ConfigError, match="method"):
        match_coders(a, b, method="greedy")
    with pytest.raises(DimensionMismatchError, match="d_model"):
        match_exact(a, b[:, :4])


WORDS = ["cats", "dogs", "code", "money", "rivers", "music", "numbers", "colours", "food"]


def test_matched_explanations_are_more_similar_than_random_pairs():
    a, b, perm = permuted_pair(len(WORDS) * 4, 16, noise=0.2, seed=5)
    m = match_exact(a, b)
    exp_a = {i: f"mentions of {WORDS[i % len(WORDS)]} in text" for i in range(len(a))}
    # B's latent perm[i] carries A's latent i: its explanation says the same in other words
    exp_b = {int(perm[i]): f"{WORDS[i % len(WORDS)]} related tokens" for i in range(len(a))}
    comparison = compare_explanations(m, exp_a, exp_b, hash_embed)
    assert comparison.mean_similarity is not None and comparison.baseline is not None
    assert comparison.mean_similarity > comparison.baseline + 0.2
    data = comparison.to_json()
    assert data["n_pairs"] == len(a) and len(data["plot"]["x"]) == len(a)
    assert [r["cosine"] for r in data["pairs"]] == sorted(
        (r["cosine"] for r in data["pairs"]), reverse=True
    )


def test_pairs_without_explanations_have_no_similarity():
    a, b, _ = permuted_pair(8, 4, noise=0.0)
    m = match_exact(a, b)
    comparison = compare_explanations(m, {0: "cats"}, {}, hash_embed)
    assert all(r.similarity is None for r in comparison.rows)
    assert comparison.mean_similarity is None and comparison.baseline is None
