"""The headline metrics of binary scorers: AUROC from P(yes) beside balanced accuracy, and scores
whose answers were all alike (constant predictions) flagged in the score, flags.json and the
summary, table and HTML report, so a column reading 0.50 explains itself."""

import json
import re

import pytest
from pipeline import toy

from saexplain._async import run_sync
from saexplain.models import ChatRequest, Explanation, LatentRef, RunConfig, Score
from saexplain.pipeline import arun
from saexplain.protocols import MethodContext
from saexplain.report import RunResults, format_table
from saexplain.report.html import read_report_data, render_html, report_data
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.fuzzing import FuzzingScorer
from saexplain.testing import (
    FakeBackend,
    FakeCoder,
    ScriptedProvider,
    competent_logprobs,
    competent_scorer_provider,
    fresh_plugin_manager,
    make_record,
)

TEXTS = [f"the {w} sat on a mat {i}" for i in range(8) for w in ("cat", "dog", "old", "red")]


def saying(answer: int) -> ScriptedProvider:
    """A too-weak scorer model: the same answer for every example, with logprobs."""

    def respond(request: ChatRequest) -> str:
        n = len(re.findall(r"^Example \d+:", request.messages[-1].content, re.MULTILINE))
        return "[" + ", ".join([str(answer)] * n) + "]"

    return ScriptedProvider(respond, logprobs=competent_logprobs)


@pytest.fixture(scope="module")
def record():
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, {0: " cat"}, d_sae=4)
    return make_record(backend, coder, 0, TEXTS)


def explanation(record, text='The word "cat"'):
    return Explanation(latent=record.latent, text=text, explainer="given")


@pytest.mark.parametrize("cls", [DetectionScorer, FuzzingScorer])
@pytest.mark.parametrize(("answer", "flag"), [(1, "yes"), (0, "no")])
def test_constant_answers_are_flagged_in_the_score(cls, answer, flag, record):
    ctx = MethodContext(providers={"scorer": saying(answer)})
    score = run_sync(cls().score(record, explanation(record), ctx))
    assert score.value == 0.5 and score.evidence == {"constant_predictions": flag}
    assert score.metrics["auroc"] == 0.5  # P(yes) alike everywhere: no ranking either


def test_a_discriminating_scorer_is_not_flagged_and_gets_auroc_from_p_yes(record):
    ctx = MethodContext(providers={"scorer": competent_scorer_provider()})
    score = run_sync(DetectionScorer().score(record, explanation(record), ctx))
    assert score.value == 1.0 and score.metrics["auroc"] == 1.0 and score.evidence == {}
    assert {round(p.probability, 2) for p in score.predictions} == {0.89, 0.2}  # P(yes)
    # a wrong explanation: no "yes" at all is constant too, and AUROC falls with it
    wrong = run_sync(DetectionScorer().score(record, explanation(record, "rivers"), ctx))
    assert wrong.value == 0.5 and wrong.evidence == {"constant_predictions": "no"}
    # without logprobs there is no AUROC, and nothing pretends otherwise
    ctx = MethodContext(providers={"scorer": competent_scorer_provider(logprobs=False)})
    plain = run_sync(DetectionScorer().score(record, explanation(record), ctx))
    assert plain.metrics["auroc"] is None


def results_with_constant_scores() -> RunResults:
    refs = [LatentRef(coder_id="c", hook="h", index=i) for i in range(4)]
    aurocs = [0.9, 0.8, 0.5, 0.5]
    values = [0.85, 0.75, 0.5, 0.5]
    evidence = [{}, {}, {"constant_predictions": "yes"}, {"constant_predictions": "no"}]
    scores = [
        Score(
            latent=r,
            scorer="detection",
            explainer="e",
            value=v,
            metrics={"balanced_accuracy": v, "auroc": a},
            evidence=ev,
        )
        for r, v, a, ev in zip(refs, values, aurocs, evidence, strict=True)
    ]
    scores.append(Score(latent=refs[0], scorer="simulation", explainer="e", value=0.4))
    explanations = [Explanation(latent=r, explainer="e", text=f"word {r.index}") for r in refs]
    return RunResults(explanations=explanations, scores=scores)


def test_summary_has_auroc_beside_the_value_and_counts_constant_scores():
    methods = results_with_constant_scores().summary()["methods"]
    m = methods["e/detection"]
    assert m["median"] == pytest.approx(0.625)  # balanced accuracy
    assert m["auroc"]["n"] == 4 and m["auroc"]["median"] == pytest.approx(0.65)
    assert m["auroc"]["mean"] == pytest.approx(0.675) and len(m["auroc"]["mean_ci95"]) == 2
    assert m["n_constant"] == 2 and m["constant_predictions"] == {"no": 1, "yes": 1}
    other = methods["e/simulation"]  # no AUROC, no constant answers: said as such
    assert other["auroc"]["n"] == 0 and other["n_constant"] == 0
    assert other["constant_predictions"] == {}


def test_table_stars_constant_scores_and_prints_the_auroc():
    table = format_table(results_with_constant_scores(), width=100)
    rows = {line.split()[0]: line for line in table.splitlines()[3:7]}
    assert rows["2"].split()[-2:] == ["0.50*", "-"] and rows["0"].split()[-2:] == ["0.85", "0.40"]
    assert "* the scorer gave one answer to every item (see flags.json)" in table
    line = next(ln for ln in table.splitlines() if ln.startswith("e/detection:"))
    assert "median 0.625" in line and "AUROC median 0.650" in line
    assert "constant answers 2" in line
    sim = next(ln for ln in table.splitlines() if ln.startswith("e/simulation:"))
    assert "AUROC" not in sim and "constant" not in sim


def test_html_report_shows_auroc_and_constant_counts():
    page = render_html(results_with_constant_scores())
    assert "<th>AUROC median</th>" in page and "constant answers</th>" in page
    row = re.search(r"<tr><td>e</td><td>detection</td>.*?</tr>", page).group(0)
    assert "0.650 (n=4)" in row and ">2 (no: 1, yes: 1)<" in row
    answers = [
        s["constant"]
        for lat in report_data(results_with_constant_scores())["latents"]
        for s in lat["scores"]
        if s["constant"]
    ]
    assert sorted(answers) == ["no", "yes"]


# --- a whole run: flags.json, summary.json --------------------------------------------------------


def config(tmp_path, scorers) -> RunConfig:
    return RunConfig.model_validate(
        dict(
            model="fake",
            coder="fake",
            dataset="toy corpus",
            n_tokens=32 * 200,
            context_length=32,
            latents={"indices": list(toy.WORDS)},
            explainers=["toy"],
            scorers=scorers,
            records={
                "window": 16,
                "explanation": ["top:5"],
                "scoring": ["quantile:6"],
                "negatives": ["random:6", "neighbours:6"],
                "n_neighbours": 2,
                "rare_below": 2,
            },
            output_dir=str(tmp_path),
            name="run",
        )
    )


async def run(tmp_path, scorer_llm):
    backend, coder, texts = toy.world()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        await arun(
            config(tmp_path, ["detection", "detection_neighbours"]),
            model=backend,
            coder=coder,
            dataset=texts,
            providers={"explainer": toy.llm(), "scorer": scorer_llm},
            progress=False,
        )
    run_dir = tmp_path / "run"
    flags = json.loads((run_dir / "flags.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return flags, summary, read_report_data(run_dir / "report" / "index.html")


async def test_a_yes_saying_scorer_model_is_flagged_in_flags_json_and_the_summary(tmp_path):
    flags, summary, page = await run(tmp_path, saying(1))
    n = len(toy.WORDS)
    for scorer in ("detection", "detection_neighbours"):
        flagged = flags["constant_predictions"][scorer]
        assert len(flagged) == n and {f["answer"] for f in flagged} == {"yes"}
        assert {f["explainer"] for f in flagged} == {"toy"}
        m = summary["methods"][f"toy/{scorer}"]
        assert m["n"] == n and m["median"] == 0.5 and m["n_constant"] == n
        assert m["constant_predictions"] == {"yes": n}
    constant = [s["constant"] for lat in page["latents"] for s in lat["scores"]]
    assert constant == ["yes"] * (2 * n)
    # flags.json reaches the page: every latent carries both scorers' flags
    assert all(len(lat["flags"]) == 2 for lat in page["latents"])


async def test_a_competent_run_gets_auroc_and_no_flags(tmp_path):
    flags, summary, _ = await run(tmp_path, competent_scorer_provider())
    assert flags["constant_predictions"] == {}
    for scorer in ("detection", "detection_neighbours"):
        m = summary["methods"][f"toy/{scorer}"]
        assert m["n"] == len(toy.WORDS) and m["median"] > 0.9, m
        assert m["auroc"]["n"] == len(toy.WORDS) and m["auroc"]["median"] > 0.9
        assert m["n_constant"] == 0
