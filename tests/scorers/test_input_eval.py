"""input_eval on planted latents: a competent scripted writer, the fake model reading its
activating and neutral sentences."""

from __future__ import annotations

import asyncio

import pytest

from saexplain.errors import ConfigError, ParseError
from saexplain.models import Explanation, LatentRecord, Score, Status
from saexplain.protocols import MethodContext
from saexplain.providers import ResponseCache, wrap_provider
from saexplain.scorers.input_eval import InputEvalScorer, split_sets
from saexplain.scorers.written import numbered_groups
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    check_scorer,
    competent_writer,
    make_record,
)

from .planted import corpus

VALUES = {0: {" cat": 2.0}, 1: {" river": 3.0}, 2: {" violin": 1.5}}
WORD = {0: "cat", 1: "river", 2: "violin"}


@pytest.fixture(scope="module")
def planted_values():
    backend = FakeBackend()
    coder = PlantedValuesCoder(backend, VALUES, d_sae=8)
    texts = corpus()
    return backend, coder, {i: make_record(backend, coder, i, texts) for i in VALUES}


def said(record: LatentRecord, text: str) -> Explanation:
    return Explanation(latent=record.latent, text=text, explainer="planted")


def context(backend, coder, provider) -> MethodContext:
    return MethodContext(backend=backend, coder=coder, providers={"scorer": provider}, seed=5)


def score(record, explanation, ctx, **settings) -> Score:
    return asyncio.run(InputEvalScorer(**settings).score(record, explanation, ctx))


@pytest.mark.parametrize("latent", sorted(VALUES))
def test_true_explanation_succeeds_with_a_margin_and_shuffled_fails(latent, planted_values):
    """Figures: true explanation success 1.0, margin = the latent's max (normalised 1.0),
    balanced accuracy 1.0; shuffled explanation success 0.0, margin 0.0."""
    backend, coder, records = planted_values
    record = records[latent]
    peak = VALUES[latent][f" {WORD[latent]}"]
    ctx = context(backend, coder, ScriptedProvider(competent_writer))
    true = check_scorer(InputEvalScorer(), record, said(record, f'the word "{WORD[latent]}"'), ctx)
    assert true.status is Status.OK and true.value == 1.0, true.metrics
    assert true.metrics["margin"] == pytest.approx(peak)
    assert true.metrics["margin_normalised"] == pytest.approx(1.0)
    assert true.metrics["n_activating"] == 5 and true.metrics["n_neutral"] == 5
    assert true.metrics["sentence_balanced_accuracy"] == 1.0
    assert [p.truth for p in true.predictions] == [True] * 5 + [False] * 5
    assert all(WORD[latent] in s["text"] for s in true.evidence["activating"])
    assert not any(WORD[latent] in s["text"] for s in true.evidence["neutral"])
    assert true.usage.calls == 1

    other = WORD[(latent + 1) % len(WORD)]
    shuffled = score(record, said(record, f'the word "{other}"'), ctx)
    assert shuffled.status is Status.OK and shuffled.value == 0.0, shuffled.metrics
    assert shuffled.metrics["margin"] == 0.0 and shuffled.metrics["mean_activating"] == 0.0


def test_the_margin_is_signed(planted_values):
    """A writer that puts the concept in the neutral set: failure with a negative margin."""
    backend, coder, records = planted_values
    record = records[1]
    answer = (
        "Activating:\n1. the old road\n2. a quiet garden\n"
        "Neutral:\n1. by the river bank\n2. the river ran\n3. a table"
    )
    s = score(record, said(record, "rivers"), context(backend, coder, ScriptedProvider([answer])))
    assert s.value == 0.0 and s.metrics["mean_neutral"] == pytest.approx(2.0)
    assert s.metrics["margin"] == pytest.approx(-2.0)
    assert s.metrics["margin_normalised"] == pytest.approx(-2.0 / 3.0)
    assert s.metrics["n_activating"] == 2 and s.metrics["n_neutral"] == 3


@pytest.mark.parametrize(
    "answer",
    [
        "Activating:\n1. a cat\n2. the cat\nNeutral:\n1. a road\n2. the road",
        "Neutral sentences:\n1. a road\n2. the road\nActivating sentences:\n1. a cat\n2. the cat",
        "Here are 2 activating and 2 neutral ones:\n1. a cat\n2. the cat\n1. a road\n2. the road",
        "**Activating**\n1. a cat\n2. the cat\n\n**Non-activating**\n1. a road\n2. the road",
    ],
)
def test_the_two_sets_are_found_in_any_order(answer):
    assert split_sets(numbered_groups(answer)) == (["a cat", "the cat"], ["a road", "the road"])


@pytest.mark.parametrize(
    "answer",
    ["1. a cat\n2. the cat", "1. a\n1. b\n1. c", "Neutral:\n1. a\nNeutral:\n1. b", "nothing"],
)
def test_answers_without_two_sets_do_not_parse(answer):
    with pytest.raises(ParseError):
        split_sets(numbered_groups(answer))


def test_an_unreadable_answer_is_an_error_dropped_from_the_cache(planted_values, tmp_path):
    backend, coder, records = planted_values
    record = records[0]
    llm = ScriptedProvider(lambda r: "1. only one list\n2. of sentences")
    provider = wrap_provider(llm, cache=ResponseCache(tmp_path), retry={"base_delay": 0.001})
    s = score(record, said(record, "cats"), context(backend, coder, provider))
    assert s.status is Status.ERROR and "ParseError" in (s.error or "")
    assert s.usage.calls == 1 and len(llm.requests) == 1 and len(provider.cache) == 0


def test_missing_model_fails_before_any_call(planted_values):
    _, _, records = planted_values
    record = records[0]
    writer = ScriptedProvider(competent_writer)
    s = score(record, said(record, "cats"), MethodContext(providers={"scorer": writer}))
    assert s.status is Status.ERROR and "coder" in (s.error or "") and writer.requests == []


def test_settings_are_checked_and_counts_reach_the_prompt(planted_values):
    with pytest.raises(ConfigError, match="n_neutral"):
        InputEvalScorer(n_neutral=0)
    backend, coder, records = planted_values
    record = records[2]
    writer = ScriptedProvider(competent_writer)
    s = score(record, said(record, "violin"), context(backend, coder, writer), n_activating=3)
    assert "Write 3 activating sentences and 5 neutral" in writer.requests[0].messages[-1].content
    assert s.metrics["n_activating"] == 3 and s.settings["prompt"] == "input_eval@1"
