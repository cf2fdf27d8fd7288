"""Scorer answers that cannot be used are dropped from the response cache (issue 14): a rerun
asks the provider again instead of replaying the same unusable answer forever."""

from __future__ import annotations

from saexplain._async import run_sync
from saexplain.models import Status, TokenLogprob
from saexplain.protocols import MethodContext
from saexplain.providers import ResponseCache, wrap_provider
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.simulation import SimulationScorer
from saexplain.testing import ScriptedProvider

from .planted import explanation


def cached(provider: ScriptedProvider, tmp_path):
    return wrap_provider(provider, cache=ResponseCache(tmp_path), retry={"base_delay": 0.001})


def test_simulation_drops_answers_it_cannot_read_from_the_cache(planted, tmp_path):
    _, _, records = planted
    record = records[0]
    for variant, logprobs in (("echo", None), ("logprobs", lambda r, t: [])):
        llm = ScriptedProvider(lambda r: "I would rather not.", logprobs=logprobs)
        provider = cached(llm, tmp_path / variant)
        ctx = MethodContext(providers={"scorer": provider}, seed=3)
        score = run_sync(
            SimulationScorer(variant=variant).score(record, explanation(record, 0), ctx)
        )
        assert score.status is Status.ERROR and score.metrics["n_answered"] == 0, variant
        assert len(llm.requests) > 0 and len(provider.cache) == 0, variant


def test_first_token_answers_without_a_0_or_1_are_dropped_from_the_cache(planted, tmp_path):
    def no_digits(request, text):
        return [TokenLogprob(token="Well", logprob=-0.01, top=(("Well", -0.01), ("So", -2.0)))]

    llm = ScriptedProvider(lambda r: "Well, let me think", logprobs=no_digits)
    provider = cached(llm, tmp_path)
    _, _, records = planted
    record = records[0]
    ctx = MethodContext(providers={"scorer": provider}, seed=7)
    scorer = DetectionScorer(batch_size=1, answer="first_token")
    score = run_sync(scorer.score(record, explanation(record, 0), ctx))
    assert score.status is Status.ERROR and "no 0/1" in (score.error or "")
    assert len(llm.requests) > 0 and len(provider.cache) == 0
