"""Resumption: a collection killed with SIGKILL mid-run continues to the same bytes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from saexplain.store import ActivationStore, Manifest, collect
from saexplain.testing import FakeBackend, FakeCoder, synthetic_corpus

JOB = Path(__file__).with_name("collect_job.py")


def run_job(out, delay=0.0):
    return subprocess.Popen(
        [sys.executable, str(JOB), str(out), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def files(root):
    """Every data file of a store, by relative path (manifest and temporaries excluded)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    ref = run_job(tmp_path / "ref")
    assert ref.wait(timeout=120) == 0, ref.stderr.read().decode()

    victim = run_job(tmp_path / "crash", delay=0.02)
    manifest = tmp_path / "crash" / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if manifest.exists():
            with open(manifest) as f:
                try:
                    if len(json.load(f)["shards"]) >= 3:
                        break
                except json.JSONDecodeError:  # pragma: no cover - atomic writes forbid this
                    pytest.fail("torn manifest")
        time.sleep(0.01)
    time.sleep(0.05)  # land inside the next shard
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL

    killed = Manifest.load(tmp_path / "crash")
    reference = Manifest.load(tmp_path / "ref")
    assert not killed.complete and 3 <= len(killed.shards) < len(reference.shards)

    resumed = run_job(tmp_path / "crash")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    after = Manifest.load(tmp_path / "crash")
    assert after.complete and after.shards == reference.shards
    assert after.settings == reference.settings
    a, b = files(tmp_path / "ref"), files(tmp_path / "crash")
    assert a.keys() == b.keys()  # no leftover temporaries, no missing shard
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    store = ActivationStore(tmp_path / "crash")
    assert store.n_tokens == 16 * 150  # no lost and no duplicated tokens


def test_interrupt_between_shard_publish_and_manifest_commit(tmp_path, monkeypatch):
    """A shard directory the manifest does not list is discarded and rewritten on resume."""
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    coder = FakeCoder.random(16, 32, hook="blocks.1.hook_resid_pre", seed=2)
    texts = synthetic_corpus(200, seed=3, vocab=["a", "b", "c", "d", "e", "f"])
    kw = dict(context_length=16, shard_contexts=7, batch_size=3, progress=False)
    ref = collect(
        FakeBackend(d_model=16, n_layers=2, vocab_size=512), coder, texts, tmp_path / "ref", **kw
    )

    calls = {"n": 0}
    real_save = Manifest.save

    def flaky_save(self, root):
        calls["n"] += 1
        if calls["n"] == 4:  # creation, shard 0, shard 1, then fail committing shard 2
            raise KeyboardInterrupt
        real_save(self, root)

    monkeypatch.setattr(Manifest, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        collect(backend, coder, texts, tmp_path / "s", **kw)
    monkeypatch.setattr(Manifest, "save", real_save)
    assert (tmp_path / "s" / "shards" / "00002").exists()  # published but never committed
    assert len(Manifest.load(tmp_path / "s").shards) == 2

    (tmp_path / "s" / "shards" / ".tmp-00009-1-1").mkdir()  # debris of another crash
    store = collect(
        FakeBackend(d_model=16, n_layers=2, vocab_size=512), coder, texts, tmp_path / "s", **kw
    )
    assert store.manifest.shards == ref.manifest.shards
    assert files(tmp_path / "s") == files(tmp_path / "ref")
    for latent in range(32):
        x, y = store.activations(latent), ref.activations(latent)
        assert np.array_equal(x.rows, y.rows) and np.array_equal(x.values, y.values)


def test_resume_of_a_complete_store_does_nothing(tmp_path):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    texts = synthetic_corpus(50, seed=0)
    collect(backend, coder, texts, tmp_path / "s", context_length=16, progress=False)
    backend.layers_run = 0
    calls = []
    backend.latent_acts = lambda *a, **k: calls.append(1)  # type: ignore[method-assign]
    store = collect(backend, coder, texts, tmp_path / "s", context_length=16, progress=False)
    assert calls == [] and store.complete
