"""Shuffled-explanation controls, generic flags and skipping them, in real (toy) runs.

Toy latent i fires on WORDS[i]; the scripted LLM names the highlighted word and answers, per
example, whether the explanation's word occurs in it: a competent explainer and scorer, so a
true explanation scores near 1 and another latent's explanation near chance."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from saexplain.methods import generic_reasons
from saexplain.models import ChatRequest, Status
from saexplain.pipeline import arun
from saexplain.pipeline.stages import shuffled_derangement
from saexplain.report import RunResults, format_table
from saexplain.rundir import SKIPPED_GENERIC
from saexplain.testing import ScriptedProvider, fresh_plugin_manager
from tests.pipeline import toy
from tests.pipeline.test_pipeline import config, lines


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


def test_derangement_is_deterministic_by_key_and_has_no_fixed_points():
    keys = [f"h_latent{i}" for i in range(50)]
    pi = shuffled_derangement(keys, seed=3, explainer="maxact")
    assert sorted(pi) == sorted(pi.values()) == sorted(keys)  # a permutation
    assert all(k != v for k, v in pi.items())  # no latent keeps its own explanation
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled_derangement(shuffled, seed=3, explainer="maxact") == pi  # keys, not order
    assert shuffled_derangement(keys, seed=4, explainer="maxact") != pi
    # losing one latent moves only the partners of its neighbours in the cycle
    fewer = shuffled_derangement(keys[1:], seed=3, explainer="maxact")
    assert sum(fewer[k] != pi[k] for k in fewer) == 1
    assert shuffled_derangement(keys[:1], seed=3, explainer="maxact") == {}
    assert shuffled_derangement(keys[:2], seed=3, explainer="maxact") == {
        keys[0]: keys[1],
        keys[1]: keys[0],
    }


async def _run(tmp_path: Path, llm: ScriptedProvider | None = None, **kw: object) -> RunResults:
    backend, coder, texts = toy.world()
    return await arun(
        config(tmp_path, **kw),
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": llm or toy.llm()},
        progress=False,
    )


def _controls(run: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for x in lines(run / "explanations.jsonl"):
        if x["explainer"] == "toy~shuffled":
            assert x["latent"]["index"] not in out, "a control was written twice"
            out[x["latent"]["index"]] = x
    return out


async def test_true_explanations_beat_their_shuffled_controls(tmp_path, manager):
    results = await _run(tmp_path, shuffled_controls=True)
    run = tmp_path / "run"
    own = {
        x["latent"]["index"]: x["text"]
        for x in lines(run / "explanations.jsonl")
        if x["explainer"] == "toy"
    }
    controls = _controls(run)
    assert set(controls) == set(toy.WORDS)
    for index, c in controls.items():
        source = int(c["evidence"]["shuffled_from"].rsplit("latent", 1)[1])
        assert source != index and c["text"] == own[source]
    true = {i: results[i].score("toy", "toyscore") for i in toy.WORDS}
    shuffled = {i: results[i].score("toy~shuffled", "toyscore") for i in toy.WORDS}
    assert min(true.values()) >= 0.99, true
    assert all(0.25 <= v <= 0.75 for v in shuffled.values()), shuffled  # chance is 0.5
    s = results.summary()["methods"]["toy/toyscore"]["shuffled"]
    assert s["n"] == 5 and s["frac_true_gt_shuffled"] == 1.0 and s["at_chance"] is False
    assert s["median_true"] == pytest.approx(1.0) and s["median_shuffled"] <= 0.75
    assert s["sign_test_p"] == pytest.approx(1 / 32)
    table = format_table(results, width=120)
    assert "toy~shuffled" not in table.splitlines()[0]  # no column group of its own
    assert f"{true[1]:.2f} ({shuffled[1]:.2f})" in table and "≈chance" not in table
    assert "true > shuffled on 5 of 5 latents (100%)" in table

    # a rerun finds everything done: no line is added, the controls are the same
    before = {f: (run / f).read_text() for f in ("explanations.jsonl", "scores.jsonl")}
    await _run(tmp_path, shuffled_controls=True)
    assert {f: (run / f).read_text() for f in before} == before


async def test_resume_after_sigkill_gives_the_same_controls(tmp_path, manager):
    job = Path(__file__).with_name("controls_job.py")
    proc = subprocess.Popen([sys.executable, str(job), str(tmp_path), "0.05"])
    scores = tmp_path / "run" / "scores.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if scores.exists() and len(scores.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = tmp_path / "run"
    assert 2 <= len(scores.read_text().splitlines()) < 2 * len(toy.WORDS), "kill it mid-run"
    killed = _controls(run)
    assert set(killed) == set(toy.WORDS)  # written before any score

    await _run(tmp_path, concurrency=2, shuffled_controls=True)
    assert _controls(run) == killed  # the same derangement, not written again
    keys = [(x["latent"]["index"], x["explainer"]) for x in lines(scores)]
    assert sorted(keys) == sorted(set(keys)), "a finished score was redone"
    assert Counter(e for _, e in keys) == {"toy": 5, "toy~shuffled": 5}
    # the same controls as a run that was never killed
    await _run(tmp_path / "clean", shuffled_controls=True)
    clean = _controls(tmp_path / "clean" / "run")
    assert {i: c["evidence"] for i, c in clean.items()} == {
        i: c["evidence"] for i, c in killed.items()
    }


def _generic_llm() -> ScriptedProvider:
    """The toy LLM, but three latents get near-duplicate non-answers."""
    vague = {
        "cat": "various common words",
        "dog": "Common words, various.",
        "bird": "Various common word.",
    }

    def answer(request: ChatRequest) -> str:
        text = request.messages[-1].content
        if text.startswith("EXPLAIN"):
            word = Counter(re.findall(r"<<(.*?)>>", text)).most_common(1)[0][0].strip().lower()
            return vague.get(word, f"the word {word}")
        return toy.answer(request)

    return ScriptedProvider(answer)


async def test_skip_generic_skips_scoring_flagged_explanations(tmp_path, manager):
    results = await _run(tmp_path, _generic_llm(), skip_generic=True, shuffled_controls=True)
    run = tmp_path / "run"
    flags = json.loads((run / "flags.json").read_text())
    flagged = {
        int(f["latent"].rsplit("latent", 1)[1]): f["reason"] for f in flags["generic"]["toy"]
    }
    assert flagged == dict.fromkeys([1, 2, 3], "near-duplicate")
    by_latent = {
        x["latent"]["index"]: x for x in lines(run / "scores.jsonl") if x["explainer"] == "toy"
    }
    for i in (1, 2, 3):
        assert by_latent[i]["status"] == Status.FAILED
        assert by_latent[i]["error"].startswith(SKIPPED_GENERIC) and not by_latent[i]["predictions"]
    assert by_latent[5]["value"] == 1.0 and by_latent[7]["value"] == 1.0
    # controls only among the explanations that are scored: 5 and 7 swap
    partners = {i: c["evidence"]["shuffled_from"] for i, c in _controls(run).items()}
    assert set(partners) == {5, 7} and partners[5].endswith("latent7")
    assert partners[7].endswith("latent5")
    m = results.summary()["methods"]["toy/toyscore"]
    assert (m["n_skipped"], m["n_errors"], m["error_rate"], m["n"]) == (3, 0, 0.0, 2)
    table = format_table(results, width=120)
    assert "skipped as generic 3" in table and "errors 0%" in table
    assert sum(" skip " in f"{line} " for line in table.splitlines()) == 3

    # without skip_generic a rerun scores them after all
    results = await _run(tmp_path, _generic_llm(), shuffled_controls=True)
    assert results.summary()["methods"]["toy/toyscore"]["n_skipped"] == 0
    assert all(results[i].score("toy", "toyscore") is not None for i in (1, 2, 3))


def test_generic_reasons_near_duplicates_and_echoes():
    from saexplain.explainers.maxact import MaxAct

    wording = MaxAct(style="label").prompt_wording()
    # what SmolLM2 answered for every latent in the issue: the prompt's own instruction
    echo = "The explanation is a short label of 1 to 6 words."
    assert "is a short label of 1 to 6 words" in wording
    texts = [
        "month names",
        "names of months",
        "The names of the months",
        echo,
        "colour words",
        "animal names in stories",
        "the token because",
        "closing brackets",
        "numbers after a dollar sign",
        "French articles",
    ]
    reasons = generic_reasons(texts, prompt=wording)
    assert reasons[:4] == ["near-duplicate"] * 3 + ["instruction-echo"]
    assert reasons[4:] == [None] * 6  # distinct explanations are not flagged
    assert generic_reasons(texts)[3] is None  # no prompt: no echo check
    # a cluster must hold a min_share of the latents, not just min_count of them
    many = texts + [f"distinct thing {i}" for i in range(40)]
    assert generic_reasons(many)[:3] == [None] * 3


async def test_builtin_detection_separates_true_from_shuffled_with_a_competent_llm(tmp_path):
    from saexplain.testing import competent_explainer, competent_scorer_provider

    backend, coder, texts = toy.world()
    cfg = config(tmp_path, explainers=["maxact"], scorers=["detection"], shuffled_controls=True)
    providers = {
        "explainer": ScriptedProvider(competent_explainer),
        "scorer": competent_scorer_provider(),
    }
    results = await arun(
        cfg, model=backend, coder=coder, dataset=texts, providers=providers, progress=False
    )
    true = [results[i].score("maxact", "detection") for i in toy.WORDS]
    shuffled = [results[i].score("maxact~shuffled", "detection") for i in toy.WORDS]
    assert min(true) > 0.8 and max(shuffled) <= 0.7, (true, shuffled)
    s = results.summary()["methods"]["maxact/detection"]["shuffled"]
    assert s["frac_true_gt_shuffled"] == 1.0 and not s["at_chance"]
