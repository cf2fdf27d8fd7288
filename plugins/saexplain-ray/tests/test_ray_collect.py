"""Collection sharded over Ray workers, on a local cluster of up to 3 worker processes started
here: the store equals a one-process collection of the same tokens (activations, statistics,
manifest), a worker killed mid-slice is retried on that slice only, a rerun after a driver died
keeps the finished slices, and a whole `sx.explain` run on Ray writes what an in-process run
writes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from saexplain_ray import make_ray_executor  # noqa: E402

from saexplain.models import RunConfig  # noqa: E402
from saexplain.pipeline.resolve import prepare  # noqa: E402
from saexplain.pipeline.stages import collect_store  # noqa: E402
from saexplain.store import ActivationStore  # noqa: E402
from saexplain.testing import fresh_plugin_manager, toy  # noqa: E402

CONTEXTS = 120  # contexts of 32 tokens collected
SLICE = 25  # contexts per slice: 5 slices, the last one short


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:  # process-wide: sx.explain uses it too
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        yield pm


def config(tmp_path: Path, name: str, *, coders: int = 1, **kw: Any) -> RunConfig:
    specs = [{"coder": "toyplanted:all", "settings": {"id": "toy-a"}}]
    if coders == 2:
        specs.append({"coder": "toyplanted:wide", "settings": {"id": "toy-b"}})
    fields: dict[str, Any] = dict(
        model="toy",
        backend="toyfake",
        coders=specs,
        dataset="toycorpus",
        n_tokens=32 * CONTEXTS,
        context_length=32,
        batch_size=5,
        latents={"indices": list(toy.WORDS)},
        explainers=["toy"],
        scorers=["toyscore"],
        explainer_model={"provider": "toyllm", "model": "scripted"},
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        name=name,
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


def ray_executor(**settings: Any) -> Any:
    return make_ray_executor(address="auto", slice_contexts=SLICE, **settings)


def collect(
    cfg: RunConfig, manager: Any, executor: Any = None, progress: bool = False
) -> ActivationStore:
    p = prepare(cfg, manager=manager)
    return collect_store(p, progress=progress, executor=executor)


def assert_same_store(one: ActivationStore, other: ActivationStore) -> None:
    """The same tokens, activations in the reader's order, statistics and manifest (but for the
    shards' names and boundaries)."""
    assert other.n_tokens == one.n_tokens == CONTEXTS * 32
    assert other.coders == one.coders
    assert np.array_equal(other.tokens(range(CONTEXTS)), one.tokens(range(CONTEXTS)))
    for info in one.coders:
        for latent in range(info.d_sae):
            a, b = one.activations(latent, info.id), other.activations(latent, info.id)
            assert np.array_equal(a.rows, b.rows) and np.array_equal(a.pos, b.pos)
            assert np.array_equal(a.values, b.values)
        s1, s2 = one.stats(info.id), other.stats(info.id)
        assert s1.n_tokens == s2.n_tokens
        for name in ("count", "sum", "max", "quantiles"):
            assert np.array_equal(getattr(s1, name), getattr(s2, name)), name
        assert s1.count.sum() > 0
    m1, m2 = one.manifest.model_dump(), other.manifest.model_dump()
    assert m1.pop("shards") != m2.pop("shards")  # the sharded store's are named by slice
    assert m1 == m2


@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_collection_equals_one_process(tmp_path, cluster, manager, workers, capsys):
    local = collect(config(tmp_path, "local", coders=2), manager)
    capsys.readouterr()
    t0 = time.perf_counter()
    executor = ray_executor(workers=workers)
    sharded = collect(config(tmp_path, "ray", coders=2), manager, executor, progress=True)
    elapsed = time.perf_counter() - t0
    # the driver's one bar, in tokens, full when the last slice is committed
    bar = capsys.readouterr().err
    assert "collect" in bar and f"{CONTEXTS * 32 / 1000:.2f}k/{CONTEXTS * 32 / 1000:.2f}k" in bar
    assert executor.last_collect["slices"] == 5
    assert executor.last_collect["collectors"] == workers
    assert_same_store(local, sharded)
    names = sorted(p.name for p in (sharded.path / "shards").iterdir())
    assert names == [f"s{a:010d}-0000" for a in range(0, CONTEXTS, SLICE)]
    print(f"sharded collection, {workers} workers: {elapsed:.2f} s")


def digests_by_context(store: ActivationStore) -> dict[str, int]:
    tokens = store.tokens(range(store.n_contexts))
    found = {toy.row_digest(row): i for i, row in enumerate(tokens)}
    assert len(found) == store.n_contexts  # every context's tokens differ
    return found


def contexts_run(log: Path, store: ActivationStore) -> Counter[int]:
    """How many times any process ran each context through the backend."""
    where = digests_by_context(store)
    return Counter(where[d] for line in log.read_text().splitlines() for d in line.split()[1:])


def test_a_worker_killed_mid_slice_is_retried_on_that_slice_only(tmp_path, cluster, manager):
    marker, log = tmp_path / "died", tmp_path / "batches.log"
    # each worker's backend counts its batches of 5 contexts; the first to reach its 3rd batch
    # (the middle of its first slice) exits at once, once: Ray restarts it and retries the slice
    settings = {"die_once": str(marker), "die_after": 3, "log_batches": str(log)}
    cfg = config(tmp_path, "ray", backend_settings=settings)
    sharded = collect(cfg, manager, ray_executor(workers=2))
    assert marker.exists()
    runs = contexts_run(log, sharded)
    assert set(runs) == set(range(CONTEXTS))  # every context collected
    twice = sorted(c for c, n in runs.items() if n > 1)
    assert twice and max(runs.values()) == 2
    # the contexts run twice are the first 10 of one slice: the dead attempt's 2 batches
    first = twice[0]
    assert first % SLICE == 0 and twice == list(range(first, first + 10))
    assert_same_store(collect(config(tmp_path, "local"), manager), sharded)


def test_a_rerun_after_the_driver_died_keeps_the_finished_slices(tmp_path, cluster, manager):
    log = tmp_path / "batches.log"
    cfg = config(tmp_path, "ray", backend_settings={"log_batches": str(log)})
    full = collect(cfg, manager, ray_executor(workers=2))
    root = full.path
    # as if the driver died having committed slices 0 and 2 (2 parked: 1 was unfinished), while
    # a worker was writing slice 3 (a half-written shard folder) and nobody had started slice 4
    m = full.manifest
    by_start = {s.start: s for s in m.shards}
    kept = {0: by_start[0], 50: by_start[50]}
    mtimes = {
        s.folder: (root / "shards" / s.folder / "tokens.npy").stat().st_mtime_ns
        for s in kept.values()
    }
    decoders = {k: v for k, v in m.checksums.items() if k.startswith("coders/")}
    interrupted = m.model_copy(
        update={
            "shards": (kept[0],),
            "parked": (kept[50],),
            "complete": False,
            "stats_complete": False,
            "checksums": decoders,
        }
    )
    for folder in ("s0000000025-0000", "s0000000100-0000"):
        (root / "shards" / folder).rename(root / "shards" / f".tmp-{folder}-1-2")
    for stats in (root / "stats").iterdir():
        stats.unlink()
    interrupted.save(root)
    log.unlink()
    resumed = collect(cfg, manager, ray_executor(workers=2))
    runs = contexts_run(log, resumed)
    again = {range(25, 50), range(75, 100), range(100, 120)}
    assert set(runs) == {c for r in again for c in r}  # only the unfinished slices
    assert set(runs.values()) == {1}
    for folder, mtime in mtimes.items():  # the finished slices' files were not rewritten
        assert (root / "shards" / folder / "tokens.npy").stat().st_mtime_ns == mtime
    assert not [p for p in (root / "shards").iterdir() if p.name.startswith(".tmp")]
    assert_same_store(collect(config(tmp_path, "local"), manager), resumed)


def test_a_model_object_collects_in_the_driver(tmp_path, cluster, manager, caplog):
    backend, _, _ = toy.world()
    p = prepare(config(tmp_path, "obj"), model=backend, manager=manager)
    executor = ray_executor()
    with caplog.at_level(logging.WARNING, logger="saexplain.ray"):
        store = collect_store(p, progress=False, executor=executor)
    assert "collecting in this process" in caplog.text and "passed as an object" in caplog.text
    assert store.n_tokens == CONTEXTS * 32 and executor.last_collect == {}
    assert [s.folder for s in store.manifest.shards] == ["00000"]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_sx_explain_on_ray_writes_what_an_in_process_run_writes(tmp_path, cluster, manager):
    import saexplain as sx

    common: dict[str, Any] = dict(
        dataset="toycorpus",
        backend="toyfake",
        n_tokens=32 * CONTEXTS,
        context_length=32,
        batch_size=5,
        latents=list(toy.WORDS),
        explainers="toy",
        scorers="toyscore",
        provider="toyllm:scripted",
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=tmp_path,
        progress=False,
    )
    sx.explain("toy", "toyplanted:all", name="local", **common)
    executor = {"name": "ray", "address": "auto", "workers": 2, "slice_contexts": SLICE}
    sx.explain("toy", "toyplanted:all", name="ray", executor=executor, **common)
    local, remote = tmp_path / "local", tmp_path / "ray"
    names = sorted(p.name for p in (remote / "store" / "shards").iterdir())
    assert names[0] == "s0000000000-0000" and len(names) == 5  # collected on the workers

    def keyed(path: Path, *fields: str) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(json.dumps(row.get(f), sort_keys=True) for f in fields) for row in lines(path)
        )

    for file, fields in (
        ("records.jsonl", ("latent", "explanation_examples", "scoring_examples", "stats")),
        ("explanations.jsonl", ("latent", "explainer", "text", "status")),
        ("scores.jsonl", ("latent", "explainer", "scorer", "value", "status", "predictions")),
    ):
        ours = keyed(remote / file, *fields)
        assert ours == keyed(local / file, *fields), file
        assert len(ours) == len(toy.WORDS)
    assert os.path.exists(remote / "summary.json")
