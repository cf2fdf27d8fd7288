"""Collection in slices (`saexplain.store.slices`, what an executor's workers run), in one process:
slices committed in any order give the store a one-process collection gives; a rerun keeps the
committed and parked slices; a one-process resume of a sliced store collects what is missing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from saexplain.errors import EmptyDatasetError
from saexplain.store import ActivationStore, collect
from saexplain.store.slices import (
    Slice,
    collect_slice,
    commit_slice,
    finish_slices,
    open_sliced,
    plan_slices,
)
from saexplain.testing import toy

SETTINGS = {"context_length": 32, "n_tokens": 32 * 150, "batch_size": 8, "shard_contexts": 16}


def one_process(tmp_path: Path) -> ActivationStore:
    backend, coder, texts = toy.world()
    return collect(backend, [coder], texts, tmp_path / "one", progress=False, **SETTINGS)


def run_slices(path: Path, parts: list[Slice], manifest, order_seed: int = 0):
    """Each slice collected by its own fresh model (as a worker would), committed in a
    shuffled order."""
    results = []
    for part in parts:
        backend, coder, texts = toy.world()
        results.append(collect_slice(backend, [coder], texts, path, part, **SETTINGS))
    random.Random(order_seed).shuffle(results)
    for result in results:
        manifest = commit_slice(path, manifest, result)
        assert sum(s.n_contexts for s in manifest.shards) == manifest.n_contexts
    return manifest


def finished(path: Path, manifest) -> ActivationStore:
    finish_slices(path, manifest)
    backend, coder, texts = toy.world()  # checks it, computes the statistics
    return collect(backend, [coder], texts, path, progress=False, **SETTINGS)


def assert_same(one: ActivationStore, other: ActivationStore) -> None:
    assert other.n_tokens == one.n_tokens
    assert np.array_equal(one.tokens(range(one.n_contexts)), other.tokens(range(one.n_contexts)))
    for latent in range(12):
        a, b = one.activations(latent), other.activations(latent)
        assert np.array_equal(a.rows, b.rows) and np.array_equal(a.pos, b.pos)
        assert np.array_equal(a.values, b.values)
    s1, s2 = one.stats(), other.stats()
    for name in ("count", "sum", "max", "quantiles"):
        assert np.array_equal(getattr(s1, name), getattr(s2, name)), name
    m1, m2 = one.manifest.model_dump(), other.manifest.model_dump()
    m1.pop("shards"), m2.pop("shards")
    assert m1 == m2


def test_slices_in_any_order_equal_one_process(tmp_path):
    backend, coder, texts = toy.world()
    path = tmp_path / "sliced"
    manifest = open_sliced(backend, [coder], texts, path, **SETTINGS)
    parts, manifest = plan_slices(path, manifest, 40)
    assert parts == [Slice(0, 40), Slice(40, 80), Slice(80, 120), Slice(120, 150)]
    manifest = run_slices(path, parts, manifest, order_seed=1)
    assert not manifest.parked and manifest.n_contexts == 150
    store = finished(path, manifest)
    assert_same(one_process(tmp_path), store)
    # 40 contexts in shards of 16: 16 + 16 + 8 per slice, named after the slice
    assert [s.folder for s in store.manifest.shards[:4]] == [
        "s0000000000-0000",
        "s0000000000-0001",
        "s0000000000-0002",
        "s0000000040-0000",
    ]


def test_a_rerun_keeps_committed_and_parked_slices(tmp_path):
    backend, coder, texts = toy.world()
    path = tmp_path / "sliced"
    manifest = open_sliced(backend, [coder], texts, path, **SETTINGS)
    parts, manifest = plan_slices(path, manifest, 40)
    # slices 0 and 2 finished; 1 died half-way (a folder of its own left); 3 never started
    manifest = run_slices(path, [parts[0], parts[2]], manifest)
    assert manifest.n_contexts == 40 and [s.start for s in manifest.parked] == [80, 96, 112]
    (path / "shards" / ".tmp-s0000000040-0000-1-2").mkdir()
    backend, coder, texts = toy.world()
    manifest = open_sliced(backend, [coder], texts, path, **SETTINGS)
    todo, manifest = plan_slices(path, manifest, 40)
    assert todo == [parts[1], parts[3]]
    assert not (path / "shards" / ".tmp-s0000000040-0000-1-2").exists()
    manifest = run_slices(path, todo, manifest)
    assert_same(one_process(tmp_path), finished(path, manifest))


def test_one_process_resumes_a_sliced_store(tmp_path):
    backend, coder, texts = toy.world()
    path = tmp_path / "sliced"
    manifest = open_sliced(backend, [coder], texts, path, **SETTINGS)
    parts, manifest = plan_slices(path, manifest, 40)
    run_slices(path, [parts[0], parts[2]], manifest)  # slice 2 parked
    store = collect(backend, [coder], texts, path, progress=False, **SETTINGS)
    assert not store.manifest.parked and store.manifest.complete
    assert_same(one_process(tmp_path), store)


def test_a_slice_past_the_end_of_the_dataset_is_empty(tmp_path):
    backend, coder, texts = toy.world()
    settings = {**SETTINGS, "n_tokens": 32 * 10_000}  # far more than the corpus holds
    path = tmp_path / "sliced"
    manifest = open_sliced(backend, [coder], texts, path, **settings)
    result = collect_slice(backend, [coder], texts, path, Slice(5000, 5100), **settings)
    assert result.n_contexts == 0 and not result.shards
    manifest = commit_slice(path, manifest, result)
    with pytest.raises(EmptyDatasetError):
        finish_slices(path, manifest)
    assert not path.exists()
