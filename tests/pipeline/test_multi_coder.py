"""Several coders in one run (issue 17): one collection pass for all of them, and the same
activations, records, explanations and scores as one run per coder; identity and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saexplain.errors import ConfigError
from saexplain.models import RunConfig, Status
from saexplain.pipeline import prepare, run_path
from saexplain.rundir import config_digest
from saexplain.store import ActivationStore
from saexplain.testing import FakeBackend, FakeCoder, PlantedValuesCoder, fresh_plugin_manager

from . import toy
from .test_pipeline import config, lines

DEEP_HOOK = "blocks.1.hook_resid_pre"
DEEP_SAMPLE = 3  # latents sampled from the deeper coder (its own selection)


class CountingBackend(FakeBackend):
    """The fake model, recording the coders of every `latent_acts` call (one forward pass)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.passes: list[tuple[str, ...]] = []

    def latent_acts(self, tokens: Any, coders: Sequence[Any], **kwargs: Any) -> Any:
        self.passes.append(tuple(c.id for c in coders))
        return super().latent_acts(tokens, coders, **kwargs)


def two_coder_world() -> tuple[CountingBackend, PlantedValuesCoder, FakeCoder, list[str]]:
    """The toy world's model and planted coder at layer 0, plus a random coder at layer 1."""
    _, _, texts = toy.world()
    backend = CountingBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    shallow = PlantedValuesCoder(
        backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12
    )
    deep = FakeCoder.random(16, 12, hook=DEEP_HOOK, seed=1)
    return backend, shallow, deep, texts


def specs(which: str) -> list[dict[str, Any]]:
    shallow = {"coder": "planted"}
    deep = {"coder": "deep", "latents": {"sample": DEEP_SAMPLE}}
    return {"both": [shallow, deep], "shallow": [shallow], "deep": [deep]}[which]


def make_config(tmp_path: Path, name: str, which: str, **kw: Any) -> RunConfig:
    data = config(tmp_path, name=name, **kw).model_dump(mode="json")
    data["coders"] = specs(which)
    return RunConfig.model_validate(data)


async def run_world(
    tmp_path: Path, which: str, latency_s: float = 0.0
) -> tuple[CountingBackend, int, Path]:
    """Run the coders `which` names; the backend, the blocks run while collecting, the run dir."""
    backend, shallow, deep, texts = two_coder_world()
    coders = {"both": [shallow, deep], "shallow": [shallow], "deep": [deep]}[which]
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        cfg = make_config(tmp_path, which, which)
        p = prepare(
            cfg,
            model=backend,
            coder=coders,
            dataset=texts,
            providers={"default": toy.llm(latency_s)},
            manager=pm,
        )
        backend.passes.clear()  # the fit checks of `prepare` (two tokens per coder)
        layers_before = backend.layers_run
        from saexplain.pipeline import arun_prepared

        await arun_prepared(p, progress=False)
    return backend, backend.layers_run - layers_before, tmp_path / which


def by_coder(rows: list[dict[str, Any]], coder_id: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["latent"]["coder_id"] == coder_id]


def results(run: Path, file: str, coder_id: str) -> dict[tuple[Any, ...], Any]:
    out: dict[tuple[Any, ...], Any] = {}
    for r in by_coder(lines(run / file), coder_id):
        key = (r["latent"]["index"], r["explainer"], r.get("scorer"))
        out[key] = (r["status"], r.get("text"), r.get("value"))
    return out


def same_store(a: ActivationStore, b: ActivationStore, coder_id: str, d_sae: int) -> None:
    assert np.array_equal(a.counts(coder_id), b.counts(coder_id))
    for latent in range(d_sae):
        x, y = a.activations(latent, coder_id), b.activations(latent, coder_id)
        assert np.array_equal(x.rows, y.rows) and np.array_equal(x.pos, y.pos)
        assert np.array_equal(x.values, y.values)


async def test_two_coders_collect_in_one_pass_and_equal_two_single_coder_runs(tmp_path):
    both, both_blocks, run = await run_world(tmp_path, "both")
    shallow, shallow_blocks, run_s = await run_world(tmp_path, "shallow")
    deep, deep_blocks, run_d = await run_world(tmp_path, "deep")
    ids = {"shallow": shallow.passes[0][0], "deep": deep.passes[0][0]}

    # one pass per batch for both coders, as many passes as one coder alone needs, stopping at
    # the deeper hook (one block per pass): no second pass for the second coder
    assert both.passes and all(p == (ids["shallow"], ids["deep"]) for p in both.passes)
    assert len(both.passes) == len(shallow.passes) == len(deep.passes)
    assert both_blocks == deep_blocks == len(deep.passes) and shallow_blocks == 0

    stores = {
        k: ActivationStore(r / "store") for k, r in (("both", run), ("s", run_s), ("d", run_d))
    }
    same_store(stores["both"], stores["s"], ids["shallow"], 12)
    same_store(stores["both"], stores["d"], ids["deep"], 12)

    for single, key in ((run_s, "shallow"), (run_d, "deep")):
        for file in ("records.jsonl", "latents.jsonl"):
            assert by_coder(lines(run / file), ids[key]) == lines(single / file)
        for file in ("explanations.jsonl", "scores.jsonl"):
            assert results(run, file, ids[key]) == results(single, file, ids[key])
    # the planted coder's latents were chosen by the run's `latents`, the deep one's by its own
    scores = lines(run / "scores.jsonl")
    assert {r["latent"]["index"] for r in by_coder(scores, ids["shallow"])} == set(toy.WORDS)
    assert len({r["latent"]["index"] for r in by_coder(scores, ids["deep"])}) == DEEP_SAMPLE
    assert all(r["status"] == Status.OK for r in scores)
    planted = {r["latent"]["index"]: r["value"] for r in by_coder(scores, ids["shallow"])}
    assert all(v == 1.0 for v in planted.values()), planted  # toy scorer: the planted word
    manifest = json.loads((run / "manifest.json").read_text())
    assert [c["id"] for c in manifest["coders"]] == [ids["shallow"], ids["deep"]]


def test_the_coder_shorthand_and_the_list_are_one_config():
    one = RunConfig(model="m", coder="saelens:r/x", coder_settings={"k": 1}, dataset="d")
    listed = RunConfig(
        model="m", coders=[{"coder": "saelens:r/x", "settings": {"k": 1}}], dataset="d"
    )
    assert one == listed and one.coder == "saelens:r/x" and one.coder_settings == {"k": 1}
    assert RunConfig(model="m", coders="saelens:r/x", dataset="d").coders[0].coder == "saelens:r/x"
    with pytest.raises(ValueError, match="not both"):
        RunConfig(model="m", coder="a", coders=["b"], dataset="d")
    with pytest.raises(ValueError):
        RunConfig(model="m", coders=[], dataset="d")
    with pytest.raises(ValueError, match="2 coders"):
        _ = RunConfig(model="m", coders=["a", "b"], dataset="d").coder


def test_the_run_identity_changes_with_any_coder():
    def digest(coders: list[Any]) -> str:
        return config_digest(RunConfig(model="m", coders=coders, dataset="d"))

    base = digest(["a", "b"])
    assert digest(["a", "c"]) != base and digest(["a"]) != base and digest(["b", "a"]) != base
    assert digest(["a", {"coder": "b", "settings": {"k": 2}}]) != base
    # a coder's own latent selection chooses latents, it is not data
    assert digest(["a", {"coder": "b", "latents": {"sample": 2}}]) == base
    # a one-coder run keeps the identity (and directory) it had before `coders` existed
    assert digest(["a"]) == config_digest(RunConfig(model="m", coder="a", dataset="d"))
    legacy = RunConfig(model="m", coder="a", dataset="d").model_dump(mode="json")
    assert run_path(RunConfig.model_validate(legacy)).name.endswith(digest(["a"]))


def test_two_coders_with_one_id_fail_before_any_work(tmp_path):
    backend = FakeBackend(d_model=16, n_layers=2)
    twins = [FakeCoder.random(16, 8, hook=DEEP_HOOK), FakeCoder.random(16, 8, hook=DEEP_HOOK)]
    cfg = make_config(tmp_path, "twins", "both", explainers=["selfexplain"], scorers=[])
    with pytest.raises(ConfigError, match="listed twice"):
        prepare(cfg, model=backend, coder=twins, dataset=["a b c"])


def test_each_coder_selection_is_checked_against_its_width(tmp_path):
    backend, shallow, deep, texts = two_coder_world()
    data = make_config(tmp_path, "wide", "both").model_dump(mode="json")
    data["coders"][1]["latents"] = {"indices": [40]}
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        cfg = RunConfig.model_validate(data)
        with pytest.raises(ConfigError, match=r"\[40\].*fake-sae"):
            prepare(
                cfg,
                model=backend,
                coder=[shallow, deep],
                dataset=texts,
                providers={"default": toy.llm()},
                manager=pm,
            )


def sigkill_mid_run(tmp_path: Path, job: Path, until: Mapping[str, int]) -> int:
    """Start `job`, SIGKILL it once `scores.jsonl` has `until["lines"]` lines; lines it had."""
    proc = subprocess.Popen([sys.executable, str(job), str(tmp_path), "0.05"])
    scores = tmp_path / "both" / "scores.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if scores.exists() and len(scores.read_text().splitlines()) >= until["lines"]:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(scores.read_text().splitlines())


async def test_resume_after_sigkill_of_a_two_coder_run_loses_nothing(tmp_path):
    job = Path(__file__).with_name("multi_coder_job.py")
    total = len(toy.WORDS) + DEEP_SAMPLE
    before = sigkill_mid_run(tmp_path, job, {"lines": 2})
    assert 2 <= before < total, "kill the job mid-run"

    _, _, run = await run_world(tmp_path, "both")  # the same config: resumes it
    await run_world(tmp_path / "fresh", "both")  # the same run, never killed
    fresh = tmp_path / "fresh" / "both"
    for file in ("scores.jsonl", "explanations.jsonl"):
        keys = [
            (r["latent"]["coder_id"], r["latent"]["index"], r["explainer"], r.get("scorer"))
            for r in lines(run / file)
        ]
        assert sorted(keys) == sorted(set(keys)), f"a finished result was redone in {file}"
        assert len(keys) == total
        for coder_id in {k[0] for k in keys}:
            assert results(run, file, coder_id) == results(fresh, file, coder_id)
    records = [
        (r["latent"]["coder_id"], r["latent"]["index"]) for r in lines(run / "records.jsonl")
    ]
    assert sorted(records) == sorted(set(records)) and len(records) == total


def test_sx_explain_takes_a_list_of_coders(tmp_path):
    import saexplain as sx

    backend, shallow, deep, texts = two_coder_world()
    results = sx.explain(
        backend,
        [shallow, deep],
        latents=[1, 2],
        explainers=["toptokens"],  # no LLM
        scorers=[],
        dataset=texts,
        n_tokens=32 * 100,
        context_length=32,
        records={"rare_below": 1},
        output_dir=tmp_path,
        name="listed",
        progress=False,
    )
    coders = {ref.coder_id for ref in results.latents}
    assert coders == {shallow.id, deep.id}
    saved = json.loads((tmp_path / "listed" / "config.json").read_text())
    assert [c["coder"] for c in saved["coders"]] == [shallow.id, deep.id]
    # resolving again from the saved config names the same coders, in order
    assert RunConfig.model_validate(saved).coders[1].coder == deep.id


def test_given_explanations_with_several_coders_are_refused(tmp_path: Path) -> None:
    """Texts keyed by latent index would explain a different latent in each coder."""
    backend, shallow, deep, texts = two_coder_world()
    given = {"name": "given", "settings": {"explanations": {"1": "the word cat"}}}
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        cfg = make_config(tmp_path, "given", "both", explainers=[given])
        with pytest.raises(ConfigError, match=r"keyed by latent index.*2 coders"):
            prepare(cfg, model=backend, coder=[shallow, deep], dataset=texts, **given_run(pm))
        one = make_config(tmp_path, "given1", "shallow", explainers=[given])
        assert prepare(one, model=backend, coder=[shallow], dataset=texts, **given_run(pm)).coders


def given_run(pm: Any) -> dict[str, Any]:
    """prepare's keywords: the toy scorer's LLM (the core alone registers no provider)."""
    return {"providers": {"default": toy.llm(0.0)}, "manager": pm}
