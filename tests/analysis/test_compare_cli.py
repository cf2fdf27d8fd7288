"""`saexplain compare` and `saexplain search` on a run directory holding two coders."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")

from saexplain.cli import main
from saexplain.models import Explanation, LatentRef
from saexplain.store import collect
from saexplain.testing import FakeBackend, FakeCoder, synthetic_corpus
from tests.analysis.planted import hash_embed

TOPICS = ["cats", "dogs", "code", "money", "rivers", "music", "numbers", "colours"]
HOOK = "blocks.0.hook_resid_pre"


@pytest.fixture(scope="module")
def two_coder_run(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A run directory whose store holds coder A and coder B = A permuted, plus noise; each
    latent explained (B's in other words)."""
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    a = FakeCoder.random(16, 32, hook=HOOK, seed=1)
    a.id = "sae-a"
    rng = np.random.default_rng(2)
    perm = rng.permutation(32)
    w = np.empty_like(a.W_dec)
    w[perm] = a.W_dec + 0.2 * rng.normal(size=a.W_dec.shape)
    b = FakeCoder(w.T.copy(), np.full(32, -0.5), w, np.zeros(16), hook=HOOK, id="sae-b")
    run = tmp_path_factory.mktemp("runs") / "run"
    texts = synthetic_corpus(40, seed=0, vocab=["x", "y", "z", "w"], min_words=8, max_words=30)
    collect(backend, [a, b], texts, run / "store", context_length=16, progress=False, fsync=False)
    lines = []
    for i in range(32):
        topic = TOPICS[i % len(TOPICS)]
        for coder, index, text in (
            ("sae-a", i, f"mentions of {topic}"),
            ("sae-b", int(perm[i]), f"{topic} words"),
        ):
            ref = LatentRef(coder_id=coder, hook=HOOK, index=index)
            lines.append(Explanation(latent=ref, explainer="maxact", text=text).model_dump_json())
    (run / "explanations.jsonl").write_text("\n".join(lines) + "\n")
    return run, perm


@pytest.fixture
def fake_embedder(monkeypatch):
    # the package's `search` is the function; the module is reached by its full name
    search_module = importlib.import_module("saexplain.analysis.search")
    monkeypatch.setattr(search_module, "default_embedder", lambda: hash_embed)


def test_compare_two_coders_of_one_run(two_coder_run, fake_embedder, tmp_path, capsys):
    run, perm = two_coder_run
    out = tmp_path / "cmp.json"
    code = main(["compare", str(run), "--coders", "sae-a", "sae-b", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "32 pairs matched (exact)" in text and "random pairs" in text
    data = json.loads(out.read_text())
    assert {p["latent_a"]: p["latent_b"] for p in data["pairs"]} == {
        i: int(perm[i]) for i in range(32)
    }
    assert data["mean_similarity"] > data["random_baseline"] + 0.2
    assert len(data["plot"]["x"]) == 32


def test_compare_blockwise_from_the_command_line(two_coder_run, fake_embedder, tmp_path):
    run, perm = two_coder_run
    out = tmp_path / "cmp.json"
    args = ["compare", str(run), str(run), "--coders", "sae-a", "sae-b", "--method", "blockwise"]
    assert main([*args, "--json", str(out)]) == 0
    pairs = json.loads(out.read_text())["pairs"]
    assert {p["latent_a"]: p["latent_b"] for p in pairs} == {i: int(perm[i]) for i in range(32)}


def test_compare_errors_are_one_line(two_coder_run, tmp_path, capsys):
    run, _ = two_coder_run
    assert main(["compare", str(run)]) == 2
    assert "--coders" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope"), str(run)]) == 2
    assert main(["compare", str(run), "--coders", "sae-a", "sae-x"]) == 2
    assert "sae-x" in capsys.readouterr().err


def test_search_prints_the_nearest_explanations(two_coder_run, fake_embedder, capsys):
    run, _ = two_coder_run
    assert main(["search", str(run), "rivers", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("rivers" in line for line in lines)
