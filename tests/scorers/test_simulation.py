"""simulation on planted latents, answered by a competent scripted LLM."""

import pytest

from saexplain._async import run_sync
from saexplain.errors import ConfigError
from saexplain.methods import expected_value
from saexplain.models import Choice, Example, Explanation, Status, TokenLogprob
from saexplain.protocols import MethodContext
from saexplain.scorers.simulation import (
    SimulationScorer,
    parse_echo,
    parse_numbered,
    show_token,
)
from saexplain.testing import (
    ScriptedProvider,
    check_scorer,
    competent_logprobs,
    competent_scorer,
    competent_scorer_provider,
    failing_every,
)

from .planted import WORDS, explanation


def run(scorer, record, expl, ctx):
    return run_sync(scorer.score(record, expl, ctx))


@pytest.mark.parametrize("logprobs", [True, False])
@pytest.mark.parametrize("latent", sorted(WORDS))
def test_true_explanation_correlates_and_shuffled_does_not(logprobs, latent, planted):
    _, _, records = planted
    record = records[latent]
    ctx = MethodContext(providers={"scorer": competent_scorer_provider(logprobs=logprobs)}, seed=3)
    true = check_scorer(SimulationScorer(), record, explanation(record, latent), ctx)
    assert true.status is Status.OK and true.value > 0.9, true.metrics
    assert true.settings["variant_used"] == ("logprobs" if logprobs else "echo")
    n = len(record.scoring_examples) + min(10, len(record.non_activating))
    assert true.metrics["n_sequences"] == n and true.metrics["n_errors"] == 0
    assert true.metrics["n_from_logprobs"] == (n if logprobs else 0)
    assert true.metrics["sequence_auroc"] > 0.9
    shuffled = run(SimulationScorer(), record, explanation(record, (latent + 1) % 4), ctx)
    assert shuffled.status is Status.OK and abs(shuffled.value) < 0.2, shuffled.metrics


def test_expected_values_come_from_logprobs(planted):
    _, _, records = planted
    record = records[0]
    ctx = MethodContext(providers={"scorer": competent_scorer_provider()})
    run(SimulationScorer(max_negatives=0), record, explanation(record, 0), ctx)
    request = ctx.provider("scorer").requests[0]
    assert request.logprobs and request.top_logprobs == 15
    answer = competent_scorer(request)
    choice = Choice(text=answer, logprobs=tuple(competent_logprobs(request, answer)))
    n = answer.count("\n") + 1
    sim = parse_numbered(choice, n, 10, True)
    assert sim.from_logprobs and {round(v, 6) for v in sim.values} == {0.2, 9.8}
    plain = parse_numbered(Choice(text=answer), n, 10, True)
    assert set(plain.values) == {0.0, 10.0} and not plain.from_logprobs


def test_expected_value_with_digit_split_ten():
    lp = TokenLogprob
    single = lp(token="10", logprob=-0.1, top=(("10", -0.1), ("9", -2.5)))
    assert expected_value(single, None, 10) == pytest.approx(
        (10 * 0.9048 + 9 * 0.0821) / (0.9048 + 0.0821), rel=1e-3
    )
    # "1" then "0": the mass on "1" is mostly 10 when "0" follows with high probability.
    first = lp(token="1", logprob=-0.05, top=(("1", -0.05), ("0", -3.0)))
    nxt = lp(token="0", logprob=-0.01, top=(("0", -0.01), ("\n", -4.6)))
    ev = expected_value(first, nxt, 10)
    assert 9.0 < ev < 10.0
    assert expected_value(lp(token="x", logprob=0.0), None, 10) is None


def test_echo_alignment_and_unfaithful_echo():
    shown = ["The", " cat", " ", " sat\\n"]
    ok = parse_echo("The\t0\ncat\t10\nsat\\n\t2", shown, 10)  # whitespace token skipped
    assert ok.values == [0.0, 10.0, 0.0, 2.0] and ok.error is None
    prose = parse_echo("Here are the values:\nThe\t0\n cat\t10\n \t0\n sat\\n\t12\nDone", shown, 10)
    assert prose.values == [0.0, 10.0, 0.0, 10.0]  # clipped to max_value
    bad = parse_echo("The\t0\ndog\t10\nsat\\n\t2", shown, 10)
    assert bad.values is None and bad.unfaithful and "'cat'" in bad.error
    extra = parse_echo("The\t0\ncat\t1\nsat\\n\t2\nmore\t3", shown, 10)
    assert extra.unfaithful


def test_tokens_are_laid_out_as_lines_whatever_the_scorer_tokenizer():
    ex = Example(tokens=(1, 2, 3), str_tokens=("Ġline", "Ċ", "\ttab"), activations=(0, 1, 0))
    assert [show_token(t) for t in ex.str_tokens] == [" line", "\\n", "\\ttab"]


@pytest.mark.parametrize("policy", ["error", "zero"])
def test_unfaithful_echo_policy(policy, planted):
    _, _, records = planted
    record = records[1]

    def sloppy(request):
        answer = competent_scorer(request)
        if len(provider.requests) % 3 == 0:  # every third sequence: a mangled first token
            first, rest = answer.split("\t", 1)
            return f"{first}X\t{rest}"
        return answer

    provider = ScriptedProvider(sloppy)
    ctx = MethodContext(providers={"scorer": provider})
    score = run(SimulationScorer(on_unfaithful=policy), record, explanation(record, 1), ctx)
    assert score.metrics["n_unfaithful"] > 0
    if policy == "error":
        assert score.metrics["n_errors"] == score.metrics["n_unfaithful"]
        assert all("unfaithful" in p.error for p in score.predictions if p.error)
    else:
        assert score.metrics["n_errors"] == 0
    assert score.value > 0.5


def test_provider_errors_are_excluded_and_counted(planted):
    _, _, records = planted
    record = records[2]
    ctx = MethodContext(providers={"scorer": competent_scorer_provider(fail_on=failing_every(4))})
    score = run(SimulationScorer(), record, explanation(record, 2), ctx)
    errors = [p for p in score.predictions if p.error]
    assert errors and score.metrics["n_errors"] == len(errors)
    assert score.metrics["n_answered"] + len(errors) == score.metrics["n_sequences"]
    assert score.status is Status.OK and score.value > 0.9
    all_fail = MethodContext(
        providers={"scorer": competent_scorer_provider(fail_on=failing_every(1))}
    )
    failed = run(SimulationScorer(), record, explanation(record, 2), all_fail)
    assert failed.status is Status.ERROR and failed.value is None


def test_logprobs_variant_needs_a_logprobs_provider(planted):
    _, _, records = planted
    record = records[0]
    ctx = MethodContext(providers={"scorer": competent_scorer_provider(logprobs=False)})
    score = run(SimulationScorer(variant="logprobs"), record, explanation(record, 0), ctx)
    assert score.status is Status.ERROR and "echo" in score.error
    assert not ctx.provider("scorer").requests


def test_failed_explanation_and_bad_settings(planted):
    _, _, records = planted
    record = records[0]
    ctx = MethodContext(providers={"scorer": competent_scorer_provider()})
    failed = Explanation(latent=record.latent, explainer="x", status="error", error="outage")
    assert run(SimulationScorer(), record, failed, ctx).status is Status.ERROR
    for bad in (
        {"variant": "tokenwise"},
        {"max_value": 0},
        {"on_unfaithful": "skip"},
        {"top_logprobs": 30},
        {"fire_threshold": 2},
        {"prompt": "nope"},
    ):
        with pytest.raises(ConfigError):
            SimulationScorer(**bad)
    settings = SimulationScorer().recorded_settings()
    assert settings["prompt"] == "simulation@1" and settings["echo_prompt"] == "simulation_echo@1"


def test_seed_picks_negatives_per_latent(planted):
    _, _, records = planted
    record = records[0]
    twin = record.model_copy(update={"latent": record.latent.model_copy(update={"index": 6})})

    def shown(rec):
        ctx = MethodContext(providers={"scorer": competent_scorer_provider()})
        run(SimulationScorer(max_negatives=5), rec, explanation(rec, 0), ctx)
        return sorted(
            r.messages[-1].content.split("Tokens", 1)[1] for r in ctx.provider("scorer").requests
        )

    assert shown(record) == shown(record) and shown(record) != shown(twin)
