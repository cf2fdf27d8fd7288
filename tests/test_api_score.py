"""Bring your own explanation: `sx.score` and `saexplain score` score texts a user already has,
on the records, seeds and held-out examples a run of the same data uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import saexplain as sx
from saexplain.cli import main
from saexplain.errors import ConfigError
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    competent_scorer_provider,
    synthetic_corpus,
)

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]
RECORDS = {
    "window": 16,
    "explanation": ["top:5"],
    "scoring": ["quantile:6"],
    "negatives": ["random:6"],
    "rare_below": 2,
}


def world() -> tuple[FakeBackend, PlantedValuesCoder, list[str]]:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=0, vocab=VOCAB, min_words=8, max_words=40)
    return backend, coder, texts


def score(tmp_path: Path, explanations: dict[int, str], **kw: Any) -> Any:
    backend, coder, texts = world()
    return sx.score(
        backend,
        coder,
        explanations=explanations,
        scorers=["detection"],
        provider=competent_scorer_provider(logprobs=False),
        dataset=texts,
        n_tokens=32 * 200,
        context_length=32,
        records=RECORDS,
        output_dir=tmp_path,
        progress=False,
        **kw,
    )


def test_right_explanations_score_high_and_shuffled_ones_near_chance(tmp_path):
    right = {i: f'the word "{w}"' for i, w in WORDS.items()}
    indices = sorted(WORDS)
    shuffled = {i: right[indices[(k + 1) % len(indices)]] for k, i in enumerate(indices)}

    good = score(tmp_path, right, name="right")
    bad = score(tmp_path, shuffled, name="shuffled")

    assert good.explainers == ["given"] and good.scorers == ["detection"]
    for i in WORDS:
        assert good[i].explanation("given") == right[i]
        assert (good[i].score("given", "detection") or 0) > 0.9
        assert (bad[i].score("given", "detection") or 1) < 0.7
    # the run directory is a run's: the summary and the report read it as usual
    assert (good.path / "report.html").is_file() and good.summary()


def test_scores_use_the_records_of_the_run_with_the_same_data(tmp_path):
    backend, coder, texts = world()
    common: dict[str, Any] = dict(
        latents=sorted(WORDS),
        dataset=texts,
        n_tokens=32 * 200,
        context_length=32,
        records=RECORDS,
        output_dir=tmp_path,
        name="run",
        progress=False,
    )
    run = sx.explain(backend, coder, explainers="given", scorers=[], **common)
    records = (run.path / "records.jsonl").read_text()
    del common["latents"]
    scored = sx.score(
        backend,
        coder,
        {1: 'the word "cat"'},
        scorers=["detection"],
        provider=competent_scorer_provider(logprobs=False),
        **common,
    )
    assert scored.path == run.path
    assert (run.path / "records.jsonl").read_text() == records  # reused, not rebuilt
    assert (scored[1].score("given", "detection") or 0) > 0.9


def test_bad_explanations_are_one_line_errors():
    backend, coder, _ = world()
    with pytest.raises(ConfigError, match="no explanations"):
        sx.score(backend, coder, {})
    with pytest.raises(ConfigError, match="keyed by latent index"):
        sx.score(backend, coder, {"3": "cat"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="latent 3 is not a non-empty string"):
        sx.score(backend, coder, {3: " "})


def test_read_explanations_takes_plain_lines_and_run_files(tmp_path):
    from saexplain.api import read_explanations

    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"latent": 3, "explanation": "cats"}\n\n'
        '{"latent": {"coder_id": "c", "hook": "h", "index": 5}, "text": "trees"}\n'
    )
    assert read_explanations(path) == {3: "cats", 5: "trees"}
    path.write_text('{"latent": 3, "explanation": "a"}\n{"latent": 3, "explanation": "b"}\n')
    with pytest.raises(ConfigError, match=r"mine.jsonl:2: latent 3 is given twice"):
        read_explanations(path)
    path.write_text('{"latent": 3}\n')
    with pytest.raises(ConfigError, match=r"mine.jsonl:1: needs `explanation`"):
        read_explanations(path)


def test_score_command_scores_a_jsonl_file(tmp_path, monkeypatch, capsys):
    from saexplain.hookspecs import Register
    from saexplain.testing import fresh_plugin_manager

    class Stack:
        """The toy world and the competent scorer, loadable by name from a config."""

        @sx.hookimpl
        def register_backends(self, register: Register) -> None:
            register("toyfake", lambda model, **settings: world()[0])

        @sx.hookimpl
        def register_coders(self, register: Register) -> None:
            def planted(spec: str, *, backend: FakeBackend) -> PlantedValuesCoder:
                return PlantedValuesCoder(
                    backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12
                )

            register("toyplanted", planted)

        @sx.hookimpl
        def register_providers(self, register: Register) -> None:
            register("competent", lambda model, **s: competent_scorer_provider(logprobs=False))

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(world()[2]))
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "model": "toy",
                "backend": "toyfake",
                "coder": "toyplanted:x",
                "dataset": str(corpus),
                "n_tokens": 32 * 200,
                "context_length": 32,
                "records": RECORDS,
                "scorers": ["detection"],
                "explainer_model": {"provider": "competent", "model": "c"},
                "output_dir": str(tmp_path / "runs"),
                "name": "scored",
            }
        )
    )
    explanations = tmp_path / "explanations.jsonl"
    explanations.write_text(
        "\n".join(
            json.dumps({"latent": i, "explanation": f'the word "{w}"'}) for i, w in WORDS.items()
        )
    )
    with fresh_plugin_manager() as pm:
        pm.register_plugin(Stack(), name="stack")
        assert main(["score", str(config), str(explanations), "-q"]) == 0
    out = capsys.readouterr().out
    assert "given" in out and "detection" in out
    from saexplain.report import RunResults

    results = RunResults.load(tmp_path / "runs" / "scored")
    assert sorted(r.index for r in results) == sorted(WORDS)
    assert all((r.score("given", "detection") or 0) > 0.9 for r in results)


def test_score_command_with_a_bad_file_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": "m", "coder": "c", "dataset": "d"}))
    assert main(["score", str(config), str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("saexplain: error: cannot read explanations") and "\n" not in err
