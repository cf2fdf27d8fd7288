"""Results integrity under failure (issue 14): a result that cannot be written, partial scores,
which configuration made a result, a run identity that a failed start does not pin, and one
process per run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import saexplain
from saexplain.errors import ConfigError, EmptyDatasetError, ProviderServerError, RunDirBusyError
from saexplain.hookspecs import Register
from saexplain.models import ChatRequest, Explanation, LatentRecord, Score, Status
from saexplain.pipeline import arun, prepare
from saexplain.protocols import MethodContext
from saexplain.report import RunResults
from saexplain.testing import ScriptedProvider, competent_scorer_provider, fresh_plugin_manager

from . import toy
from .test_pipeline import config, lines

SURROGATE = "\ud800"  # what json.loads makes of "\ud800": no UTF-8 encoding exists for it


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


def run_toy(tmp_path: Path, providers: dict, **kw):
    backend, coder, texts = toy.world()
    return arun(
        config(tmp_path, **kw),
        model=backend,
        coder=coder,
        dataset=texts,
        providers=providers,
        progress=False,
    )


def read(tmp_path: Path, name: str) -> list[dict]:
    return lines(tmp_path / "run" / f"{name}.jsonl")


# --- 1. every write inside the per-latent guard ---------------------------------------------------


class SurrogateExplainer(toy.ToyExplainer):
    """The toy explainer, answering with text no JSON in UTF-8 can hold for latent 2 (methods
    may make text without a provider, whose middleware sanitises what it returns)."""

    name = "surrogate"

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        explanation = await super().explain(record, ctx)
        if record.latent.index == 2:
            return explanation.model_copy(update={"text": f"the word {SURROGATE}"})
        return explanation


class SurrogateScorer(toy.ToyScorer):
    """The toy scorer, recording a setting no JSON in UTF-8 can hold for latent 3."""

    name = "surrogate"

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        score = await super().score(record, explanation, ctx)
        if record.latent.index == 3:
            return score.model_copy(update={"settings": {"note": SURROGATE}})
        return score


class SurrogatePlugin:
    @saexplain.hookimpl
    def register_explainers(self, register: Register) -> None:
        register("surrogate", SurrogateExplainer)

    @saexplain.hookimpl
    def register_scorers(self, register: Register) -> None:
        register("surrogate", SurrogateScorer)


async def test_a_result_that_cannot_be_written_is_an_error_and_the_run_goes_on(tmp_path, manager):
    manager.register_plugin(SurrogatePlugin(), name="surrogate")
    await run_toy(tmp_path, {"default": toy.llm()}, explainers=["surrogate"], scorers=["surrogate"])

    explanations = {x["latent"]["index"]: x for x in read(tmp_path, "explanations")}
    bad = explanations.pop(2)  # latent 2 fires on "dog"
    assert bad["status"] == Status.ERROR and "cannot be written" in bad["error"]
    assert {x["status"] for x in explanations.values()} == {Status.OK}
    scores = {x["latent"]["index"]: x for x in read(tmp_path, "scores")}
    assert scores[2]["status"] == Status.ERROR and "explanation not available" in scores[2]["error"]
    assert scores[3]["status"] == Status.ERROR and "cannot be written" in scores[3]["error"]
    assert {scores[i]["status"] for i in (1, 5, 7)} == {Status.OK}
    assert (tmp_path / "run" / "report.html").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["methods"]["surrogate/surrogate"]["n_total"] == len(toy.WORDS)


# --- 2. partial scores are retried ---------------------------------------------------------------


def scorer_failing(calls: set[int] | None) -> ScriptedProvider:
    """The competent scorer double, failing the calls in `calls` (None: every call)."""

    def fail_on(index: int, _request: ChatRequest) -> BaseException | None:
        if calls is None or index in calls:
            return ProviderServerError("scripted outage", model="scripted")
        return None

    return competent_scorer_provider(fail_on=fail_on)


def detection(tmp_path: Path) -> dict[int, Score]:
    return {
        s.latent.index: s
        for s in (Score.model_validate(x) for x in read(tmp_path, "scores"))
        if s.status is not Status.ERROR
    }


async def test_partial_scores_are_counted_kept_and_retried_on_resume(tmp_path, manager):
    kw = {"scorers": ["detection"]}
    # two batches per latent (8 items, 5 per prompt): fail one call in three
    flaky = scorer_failing({0, 3, 6})
    await run_toy(tmp_path, {"explainer": toy.llm(), "scorer": flaky}, **kw)
    first = RunResults.load(tmp_path / "run")
    partial = {s.latent.index for s in first.scores if s.partial}
    assert partial and len(partial) < len(toy.WORDS)
    method = first.summary(n_resamples=10)["methods"]["toy/detection"]
    assert method["n_partial"] == len(partial) and method["n"] == len(toy.WORDS)

    # a retry that fails outright keeps the partial score: it says more than an error
    await run_toy(tmp_path, {"explainer": toy.llm(), "scorer": scorer_failing(None)}, **kw)
    kept = RunResults.load(tmp_path / "run")
    assert {s.latent.index for s in kept.scores if s.partial} == partial
    assert all(s.status is Status.OK for s in kept.scores)

    # a good provider rescores exactly the partial ones
    good = competent_scorer_provider()
    await run_toy(tmp_path, {"explainer": toy.llm(), "scorer": good}, **kw)
    assert len(good.requests) == 2 * len(partial)
    final = RunResults.load(tmp_path / "run")
    assert not any(s.partial for s in final.scores)
    assert final.summary(n_resamples=10)["methods"]["toy/detection"]["n_partial"] == 0

    idle = competent_scorer_provider()
    await run_toy(tmp_path, {"explainer": toy.llm(), "scorer": idle}, **kw)
    assert idle.requests == []


# --- 3. each result names the configuration that made it -----------------------------------------


async def test_another_model_or_setting_makes_new_results_never_a_relabelling(tmp_path, manager):
    first = ScriptedProvider(toy.answer, model="model-a")
    await run_toy(tmp_path, {"default": first})
    assert first.requests
    rows = read(tmp_path, "explanations")
    assert {x["llm"] for x in rows} == {"scripted:model-a"}
    assert {x["llm"] for x in read(tmp_path, "scores")} == {"scripted:model-a"}

    second = ScriptedProvider(toy.answer, model="model-b")
    await run_toy(tmp_path, {"default": second})
    explain_calls = [r for r in second.requests if r.messages[-1].content.startswith("EXPLAIN")]
    assert len(explain_calls) == len(toy.WORDS)  # new results, not model-a's relabelled
    rows = read(tmp_path, "explanations")
    assert [x["llm"] for x in rows].count("scripted:model-a") == len(toy.WORDS)  # kept
    assert [x["llm"] for x in rows].count("scripted:model-b") == len(toy.WORDS)
    results = RunResults.load(tmp_path / "run")  # the report shows the latest configuration's
    assert {e.llm for e in results.explanations} == {"scripted:model-b"}
    assert {s.llm for s in results.scores} == {"scripted:model-b"}
    assert len(results.scores) == len(toy.WORDS)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["methods"]["toy/toyscore"]["n_total"] == len(toy.WORDS)

    # a changed method setting is a new configuration too; the same one again has nothing to do
    explainers = [{"name": "toy", "settings": {"n_examples": 3}}]
    third = ScriptedProvider(toy.answer, model="model-b")
    await run_toy(tmp_path, {"default": third}, explainers=explainers)
    assert any(r.messages[-1].content.startswith("EXPLAIN") for r in third.requests)
    idle = ScriptedProvider(toy.answer, model="model-b")
    await run_toy(tmp_path, {"default": idle}, explainers=explainers)
    assert idle.requests == []
    ids = {x["method_id"] for x in read(tmp_path, "explanations")}
    assert len(ids) == 3


# --- 4. a failed start does not pin the run's identity -------------------------------------------


async def test_a_run_that_failed_on_its_dataset_can_be_rerun_with_another(tmp_path, manager):
    backend, coder, texts = toy.world()
    llm = {"default": toy.llm()}
    with pytest.raises(EmptyDatasetError):
        await arun(
            config(tmp_path, dataset="empty.txt"),
            model=backend,
            coder=coder,
            dataset=[],
            providers=llm,
            progress=False,
        )
    results = await arun(
        config(tmp_path), model=backend, coder=coder, dataset=texts, providers=llm, progress=False
    )
    assert len(results.scores) == len(toy.WORDS)
    # once the run holds data, its identity is fixed again
    with pytest.raises(ConfigError, match="dataset"):
        prepare(config(tmp_path, dataset="other"), model=backend, coder=coder, providers=llm)


# --- 5. one process per run directory ------------------------------------------------------------

HOLD = """
import sys, time
from saexplain.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(30)
"""


async def test_a_second_process_on_a_run_directory_fails_fast_naming_the_holder(tmp_path, manager):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusyError, match=rf"in use .*\(pid {holder.pid}\)") as busy:
            await run_toy(tmp_path, {"default": toy.llm()})
        assert len(str(busy.value).splitlines()) == 1
        assert not (run / "explanations.jsonl").exists()  # it did no work
    finally:
        holder.kill()
        holder.wait(timeout=10)
    results = await run_toy(tmp_path, {"default": toy.llm()})  # the OS released the lock
    assert len(results.scores) == len(toy.WORDS)
