import json
from pathlib import Path

import pytest

from saexplain.errors import ConfigError, UnknownComponentError
from saexplain.models import Explanation, LatentSelection, RunConfig, Score, Status
from saexplain.pipeline import arun, prepare, run_path
from saexplain.testing import FakeCoder, ScriptedProvider, failing_every, fresh_plugin_manager

from . import toy


def config(tmp_path: Path, **kw) -> RunConfig:
    fields = dict(
        model="fake",
        coder="fake",
        dataset="toy corpus",
        n_tokens=32 * 200,
        context_length=32,
        latents=LatentSelection(indices=tuple(toy.WORDS)),
        explainers=["toy"],
        scorers=["toyscore"],
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        name="run",
        concurrency=4,
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_end_to_end_run_dir(tmp_path, manager):
    backend, coder, texts = toy.world()
    llm = toy.llm()
    cfg = config(tmp_path)
    results = await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers={"default": llm}, progress=False
    )
    run = tmp_path / "run"
    assert run_path(cfg) == run
    for name in (
        "config.json",
        "manifest.json",
        "latents.jsonl",
        "records.jsonl",
        "explanations.jsonl",
        "scores.jsonl",
        "summary.json",
        "report.html",
    ):
        assert (run / name).is_file(), name
    explanations = [Explanation.model_validate(x) for x in lines(run / "explanations.jsonl")]
    assert {e.latent.index: e.text for e in explanations} == {
        i: f"the word {w}" for i, w in toy.WORDS.items()
    }
    scores = [Score.model_validate(x) for x in lines(run / "scores.jsonl")]
    assert len(scores) == len(toy.WORDS)
    assert all(s.value == 1.0 for s in scores), [s.value for s in scores]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["coder"]["id"] == coder.id
    assert "saexplain_version" in manifest and manifest["plugins"]
    assert results.summary()  # the results object reads the same directory
    flags = json.loads((run / "flags.json").read_text())
    assert flags == {"generic": {}, "constant_predictions": {}}
    # usage reached the results: the scripted provider charges per token
    assert sum(e.usage.cost_usd for e in explanations) > 0


async def test_rerun_skips_finished_and_retries_errors(tmp_path, manager):
    backend, coder, texts = toy.world()
    flaky = ScriptedProvider(toy.answer, fail_on=failing_every(3))
    cfg = config(tmp_path)
    await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers={"default": flaky}, progress=False
    )
    first = lines(tmp_path / "run" / "explanations.jsonl")
    errors = [x for x in first if x["status"] == Status.ERROR]
    assert errors, "the flaky provider should have failed some explanations"
    good = toy.llm()
    await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers={"default": good}, progress=False
    )
    explain_calls = [r for r in good.requests if r.messages[-1].content.startswith("EXPLAIN")]
    assert len(explain_calls) == len(errors)  # only the errored ones were redone
    final = {}
    for x in lines(tmp_path / "run" / "explanations.jsonl"):
        final[x["latent"]["index"]] = x["status"]
    assert set(final.values()) == {Status.OK}
    # a third run has nothing to do
    idle = toy.llm()
    await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers={"default": idle}, progress=False
    )
    assert idle.requests == []


def test_bad_configs_fail_before_heavy_work(tmp_path, manager):
    backend, coder, _ = toy.world()
    llm = {"default": toy.llm()}
    with pytest.raises(UnknownComponentError, match="toy"):
        prepare(
            config(tmp_path, explainers=["toyy"]),
            model=backend,
            coder=coder,
            providers=llm,
            manager=manager,
        )
    with pytest.raises(ConfigError, match="n_examples"):
        prepare(
            config(tmp_path, explainers=[{"name": "toy", "settings": {"n_examples": 0}}]),
            model=backend,
            coder=coder,
            providers=llm,
            manager=manager,
        )
    wrong_hook = FakeCoder.random(16, 8, hook="blocks.9.hook_resid_pre")
    with pytest.raises(ConfigError, match=r"blocks\.9"):
        prepare(config(tmp_path), model=backend, coder=wrong_hook, providers=llm, manager=manager)
    wrong_width = FakeCoder.random(24, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(ConfigError, match="24"):
        prepare(config(tmp_path), model=backend, coder=wrong_width, providers=llm, manager=manager)
    with pytest.raises(ConfigError, match="records"):
        prepare(
            config(tmp_path, records={"window": 0}),
            model=backend,
            coder=coder,
            providers=llm,
            manager=manager,
        )


async def test_no_alive_latents_is_a_clear_error(tmp_path, manager):
    backend, coder, texts = toy.world()
    cfg = config(tmp_path, latents=LatentSelection(indices=(0, 4)))  # never planted
    with pytest.raises(ConfigError, match="no alive latents"):
        await arun(
            cfg,
            model=backend,
            coder=coder,
            dataset=texts,
            providers={"default": toy.llm()},
            progress=False,
        )


async def test_a_changed_data_config_needs_a_new_run_dir(tmp_path, manager):
    backend, coder, texts = toy.world()
    llm = {"default": toy.llm()}
    await arun(
        config(tmp_path), model=backend, coder=coder, dataset=texts, providers=llm, progress=False
    )
    with pytest.raises(ConfigError, match="context_length"):
        prepare(
            config(tmp_path, context_length=64),
            model=backend,
            coder=coder,
            providers=llm,
            manager=manager,
        )


async def test_prompt_logs_and_secret_redaction(tmp_path, manager):
    backend, coder, texts = toy.world()
    cfg = config(
        tmp_path,
        log_prompts=True,
        explainer_model={
            "provider": "litellm",
            "model": "gpt-4o-mini",
            "settings": {"api_key": "sk-secretsecret123"},
        },
    )
    await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"explainer": toy.llm(), "scorer": toy.llm()},
        progress=False,
    )
    run = tmp_path / "run"
    logs = sorted((run / "logs").glob("*.jsonl"))
    assert len(logs) == len(toy.WORDS)
    entry = json.loads(logs[0].read_text().splitlines()[0])
    assert entry["method"] and entry["request"]["messages"] and entry["response"]["choices"]
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".html"):
            assert "sk-secretsecret123" not in path.read_text(errors="ignore"), path


async def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, manager):
    import signal
    import subprocess
    import sys
    import time

    job = Path(__file__).with_name("pipeline_job.py")
    proc = subprocess.Popen([sys.executable, str(job), str(tmp_path), "0.05"])
    scores = tmp_path / "run" / "scores.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if scores.exists() and len(scores.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(scores.read_text().splitlines())
    assert 2 <= before < len(toy.WORDS), "kill the job mid-run"

    backend, coder, texts = toy.world()
    cfg = config(tmp_path, concurrency=2, latents={"indices": list(toy.WORDS)})
    await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": toy.llm()},
        progress=False,
    )
    run = tmp_path / "run"
    score_keys = [
        (x["latent"]["index"], x["explainer"], x["scorer"]) for x in lines(run / "scores.jsonl")
    ]
    assert sorted(score_keys) == sorted(set(score_keys)), "a finished pair was redone"
    assert {k[0] for k in score_keys} == set(toy.WORDS)
    expl = [
        x["latent"]["index"] for x in lines(run / "explanations.jsonl") if x["status"] == Status.OK
    ]
    assert sorted(expl) == sorted(set(expl)) and set(expl) == set(toy.WORDS)
    records = [x["latent"]["index"] for x in lines(run / "records.jsonl")]
    assert sorted(records) == sorted(set(records))


async def test_builtin_methods_end_to_end_with_competent_doubles(tmp_path):
    from saexplain.testing import competent_explainer, competent_scorer_provider

    backend, coder, texts = toy.world()
    cfg = config(tmp_path, explainers=["maxact", "vocabproj"], scorers=["detection", "fuzzing"])
    providers = {
        "explainer": ScriptedProvider(competent_explainer),
        "scorer": competent_scorer_provider(),
    }
    results = await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers=providers, progress=False
    )
    run = tmp_path / "run"
    explanations = [Explanation.model_validate(x) for x in lines(run / "explanations.jsonl")]
    maxact = {e.latent.index: e.text for e in explanations if e.explainer == "maxact"}
    for index, word in toy.WORDS.items():
        assert word in maxact[index].lower(), (index, maxact[index])
    scores = [Score.model_validate(x) for x in lines(run / "scores.jsonl")]
    assert len(scores) == len(toy.WORDS) * 2 * 2
    for s in scores:
        if s.explainer == "maxact":
            assert s.value is not None and s.value > 0.8, (s.latent.index, s.scorer, s.value)
    assert results.summary()


async def test_generic_answers_are_flagged(tmp_path, manager):
    backend, coder, texts = toy.world()
    llm = ScriptedProvider(lambda r: "a word" if "EXPLAIN" in r.messages[-1].content else "1")
    await arun(
        config(tmp_path),
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": llm},
        progress=False,
    )
    flags = json.loads((tmp_path / "run" / "flags.json").read_text())
    assert len(flags["generic"]["toy"]) == len(toy.WORDS)
    assert {f["text"] for f in flags["generic"]["toy"]} == {"a word"}
