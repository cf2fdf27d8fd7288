"""benchmarks/quality.py's helpers: the demo's true-vs-shuffled figure read from a finished run
directory, the concept an explanation names, and which scorers sit at chance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from saexplain.pipeline import arun
from saexplain.testing import ScriptedProvider, fresh_plugin_manager
from tests.pipeline import toy
from tests.pipeline.test_pipeline import config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location(
        "quality_benchmark", ROOT / "benchmarks/quality.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality_benchmark"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


async def _run(tmp_path: Path, llm: ScriptedProvider) -> Path:
    backend, coder, texts = toy.world()
    results = await arun(
        config(tmp_path, shuffled_controls=True),
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": llm},
        progress=False,
    )
    return results.path


async def test_a_competent_run_beats_its_shuffled_controls(quality, manager, tmp_path):
    run = await _run(tmp_path, toy.llm())
    assert quality.demo_true_gt_shuffled(run) == 1.0
    assert quality.demo_true_gt_shuffled(run, scorer="no-such-scorer") is None


async def test_a_scorer_that_says_yes_to_everything_never_beats_them(quality, manager, tmp_path):
    def yes_scorer(request):
        # explain like the competent double, but answer "1" to every scoring question
        answer = toy.answer(request)
        return "1" if answer in ("0", "1") else answer

    run = await _run(tmp_path, ScriptedProvider(yes_scorer))
    assert quality.demo_true_gt_shuffled(run) == 0.0  # ties are not wins


def test_concept_of_names_the_concept_by_name_or_by_word(quality):
    concepts = ["month", "colour", "animal"]
    assert quality.concept_of('the tokens " April" (51%), " June" (20%)', concepts) == "month"
    assert quality.concept_of("colors and paint", concepts) == "colour"
    assert quality.concept_of("the closing parenthesis of a call", concepts) is None
    assert quality.concept_of("aprilia motorbikes", concepts) is None  # whole words only


def test_scorers_at_chance_and_the_figure_of_merit(quality):
    rows = [
        {"scorer": "detection-prefill", "provider": "local", "true_gt_shuffled": 0.5},
        {"scorer": "detection-prefill", "provider": "local", "true_gt_shuffled": 0.25},
        {"scorer": "embedding", "provider": "minilm", "true_gt_shuffled": 0.5},
        {"scorer": "embedding", "provider": "minilm", "true_gt_shuffled": 0.875},
        {"scorer": "detection-list", "provider": "local", "true_gt_shuffled": None},
    ]
    assert quality.scorers_at_chance({"rows": rows}) == {
        ("detection-prefill", "local"),
        ("detection-list", "local"),
    }
    with_auroc = SimpleNamespace(value=0.5, metrics={"auroc": 0.8})  # what it reads of a Score
    assert quality.figure(with_auroc) == 0.8  # the ranking, not the tied balanced accuracy
    plain = SimpleNamespace(value=0.7, metrics={"auroc": float("nan")})
    assert quality.figure(plain) == 0.7 and quality.figure(None) is None
