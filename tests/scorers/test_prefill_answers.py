"""answer="prefill" (and "auto") in detection and fuzzing: the reply is prefilled up to the digit
and P(1) vs P(0) is read from the next token's alternatives."""

import math

import pytest

from saexplain._async import run_sync
from saexplain.errors import ConfigError
from saexplain.models import ChatRequest, Status, TokenLogprob
from saexplain.protocols import MethodContext
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.fuzzing import FuzzingScorer
from saexplain.testing import ScriptedProvider, competent_scorer

from .planted import explanation

SCORERS = [DetectionScorer, FuzzingScorer]


def digit_logprobs(p_yes: float):
    """Logprobs of a tokenizer that writes the digit with a leading space: the mass of " 1" and
    "1" (and " 0" and "0") must be pooled, the chosen token is the likelier digit."""

    def logprobs(request: ChatRequest, text: str) -> list[TokenLogprob]:
        yes = competent_scorer(request).strip() == "1"
        p1 = p_yes if yes else 1 - p_yes
        top = (
            (" 1", math.log(p1 * 0.7)),
            (" 0", math.log((1 - p1) * 0.7)),
            ("1", math.log(p1 * 0.2)),
            ("0", math.log((1 - p1) * 0.2)),
            (" The", math.log(0.1)),
        )
        top = tuple(sorted(top, key=lambda t: -t[1]))
        return [TokenLogprob(token=top[0][0], logprob=top[0][1], top=top)]

    return logprobs


def run(scorer, record, expl, ctx):
    return run_sync(scorer.score(record, expl, ctx))


@pytest.mark.parametrize("cls", SCORERS)
def test_prefill_reads_the_digit_mass_after_the_prefilled_reply(cls, planted):
    _, _, records = planted
    record = records[0]
    llm = ScriptedProvider(lambda r: "ignored", logprobs=digit_logprobs(0.8), prefill=True)
    ctx = MethodContext(providers={"scorer": llm}, seed=7)
    score = run(cls(answer="prefill"), record, explanation(record, 0), ctx)
    assert score.status is Status.OK and score.metrics["n_errors"] == 0
    assert score.value is not None and score.value > 0.9, score.metrics
    assert score.metrics["auroc"] > 0.9
    assert score.settings["answer_used"] == "prefill"
    # " 1" and "1" pooled: P(1) = 0.8 where the competent reader says yes, 0.2 where it says no
    probs = sorted({round(p.probability, 6) for p in score.predictions})
    assert probs == [0.2, 0.8]
    assert all(p.predicted == (p.probability > 0.5) for p in score.predictions)
    n_items = len(record.scoring_examples) + len(record.non_activating)
    assert len(llm.requests) == n_items  # one item per call, whatever batch_size says
    for request in llm.requests:
        assert request.prefill == "Answer: " and request.max_tokens == 1
        assert request.top_logprobs == 20  # both digits and their variants are among them
        user = request.messages[-1].content
        assert "list" not in user and "list" not in request.messages[0].content
        assert user.count("Example 1:") == 1
    shuffled = run(cls(answer="prefill"), record, explanation(record, 1), ctx)
    assert 0.35 <= shuffled.value <= 0.65, shuffled.metrics


def test_more_zero_mass_than_one_mass_predicts_no(planted):
    _, _, records = planted
    record = records[0]
    # the reader leans "yes" nowhere: P(1) = 0.3 on matches, 0.7 on the rest
    llm = ScriptedProvider(lambda r: "ignored", logprobs=digit_logprobs(0.3), prefill=True)
    ctx = MethodContext(providers={"scorer": llm}, seed=7)
    score = run(DetectionScorer(answer="prefill"), record, explanation(record, 0), ctx)
    for p in score.predictions:
        assert p.predicted is (p.probability > 0.5)
        assert p.predicted is (not p.truth)  # inverted reader: every answer wrong
    assert score.value == 0.0 and score.metrics["auroc"] == 0.0


@pytest.mark.parametrize("cls", SCORERS)
def test_prefill_without_logprobs_reads_the_written_digit(cls, planted):
    _, _, records = planted
    record = records[2]
    llm = ScriptedProvider(competent_scorer, prefill=True)  # answers "1" / "0" after the prefill
    ctx = MethodContext(providers={"scorer": llm}, seed=7)
    score = run(cls(answer="prefill"), record, explanation(record, 2), ctx)
    assert score.metrics["n_errors"] == 0 and score.value > 0.9
    assert all(p.probability is None for p in score.predictions)
    assert all(r.prefill == "Answer: " and not r.logprobs for r in llm.requests)


def test_prefill_answer_that_is_not_a_digit_is_an_error_not_a_no(planted):
    _, _, records = planted
    record = records[0]
    llm = ScriptedProvider(lambda r: " The example", prefill=True)
    ctx = MethodContext(providers={"scorer": llm}, seed=7)
    score = run(DetectionScorer(answer="prefill"), record, explanation(record, 0), ctx)
    assert score.status is Status.ERROR and score.value is None
    assert all(p.predicted is None and p.error for p in score.predictions)


def test_auto_is_prefill_only_where_the_provider_prefills_with_logprobs(planted):
    _, _, records = planted
    record = records[0]
    scorer = DetectionScorer()  # answer="auto"
    cases = [
        (ScriptedProvider(competent_scorer, logprobs=digit_logprobs(0.9), prefill=True), "prefill"),
        (ScriptedProvider(competent_scorer, prefill=True), "list"),  # no logprobs: cheap lists
        (ScriptedProvider(competent_scorer, logprobs=digit_logprobs(0.9)), "list"),
    ]
    for llm, mode in cases:
        assert scorer.answer_mode(llm) == mode
        score = run(
            scorer, record, explanation(record, 0), MethodContext(providers={"scorer": llm})
        )
        assert score.settings["answer_used"] == mode
        assert all((r.prefill is not None) == (mode == "prefill") for r in llm.requests)


def test_prefill_on_a_provider_that_cannot_is_refused_before_any_call(planted):
    _, _, records = planted
    record = records[0]
    llm = ScriptedProvider(competent_scorer)
    ctx = MethodContext(providers={"scorer": llm}, seed=7)
    scorer = DetectionScorer(answer="prefill")
    with pytest.raises(ConfigError, match="prefilled reply"):
        scorer.preflight(ctx)
    score = run(scorer, record, explanation(record, 0), ctx)
    assert score.status is Status.ERROR and "prefilled reply" in (score.error or "")
    assert llm.requests == []
    DetectionScorer(answer="list").preflight(ctx)  # other modes need nothing
