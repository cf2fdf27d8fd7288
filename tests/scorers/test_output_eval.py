"""output_eval on the fake model: latents planted as output directions (each decoder row is a
word's unembedding direction, so amplifying it makes the model write that word) and a competent
scripted judge that picks the set which mentions the explanation's words most."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import numpy as np
import pytest

from saexplain.errors import ConfigError, ParseError
from saexplain.models import ChatRequest, Explanation, LatentRecord, LatentRef, LatentStats, Status
from saexplain.protocols import MethodContext
from saexplain.providers import ResponseCache, wrap_provider
from saexplain.scorers.output_eval import (
    OutputEvalScorer,
    parse_choice,
    random_latents,
    slot_orders,
)
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    check_scorer,
    explanation_keywords,
)

WORDS = (
    "cat",
    "river",
    "violin",
    "apple",
    "storm",
    "castle",
    "pepper",
    "rocket",
    "garden",
    "lemon",
    "tiger",
    "planet",
    "bottle",
    "forest",
    "candle",
    "mirror",
)
_SET = re.compile(r"^Set (\d+):$")


def planted_outputs(backend: FakeBackend, words: tuple[str, ...] = WORDS) -> PlantedValuesCoder:
    """A coder whose latent i writes the unembedding direction of `words[i]`: amplifying it
    promotes that word in everything the model generates."""
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in enumerate(words)}, d_sae=16)
    for i, w in enumerate(words):
        u = backend._unembed[:, backend._id(f" {w}")]
        coder.W_dec[i] = u / np.linalg.norm(u)
    return coder


def judge(request: ChatRequest) -> str:
    """A competent judge: counts the explanation's keywords in each set's generated text (after
    the "|") and picks the set with most, when it shows them as a theme (3 mentions or more,
    not a stray word); otherwise it guesses (from a hash of the prompt, so reruns agree)."""
    user = request.messages[-1].content
    described = next(
        ln.split(":", 1)[1] for ln in user.splitlines() if ln.startswith("Description:")
    )
    keywords = explanation_keywords(described)
    counts: list[int] = []
    for line in user.splitlines():
        if _SET.match(line):
            counts.append(0)
        elif line.startswith("- ") and counts:
            written = line.split(" | ", 1)[1].lower()
            counts[-1] += sum(len(re.findall(rf"\b{re.escape(k)}\b", written)) for k in keywords)
    if max(counts) >= 3:
        pick = int(np.argmax(counts)) + 1
        return f"Set {pick} is about it.\nAnswer: {pick}"
    guess = int.from_bytes(hashlib.blake2b(user.encode(), digest_size=4).digest(), "little")
    return f"None of them fits well.\nAnswer: {guess % len(counts) + 1}"


def bare(coder: PlantedValuesCoder, latent: int) -> LatentRecord:
    """The record a run of output_eval alone builds: the latent, no examples."""
    ref = LatentRef(coder_id=coder.id, hook=coder.hook, index=latent)
    return LatentRecord(latent=ref, stats=LatentStats(n_tokens=0, count=0))


def said(record: LatentRecord, text: str) -> Explanation:
    return Explanation(latent=record.latent, text=text, explainer="planted")


def run(scorer: OutputEvalScorer, record: LatentRecord, text: str, ctx: MethodContext) -> Any:
    return asyncio.run(scorer.score(record, said(record, text), ctx))


@pytest.fixture(scope="module")
def model() -> tuple[FakeBackend, PlantedValuesCoder]:
    backend = FakeBackend(vocab_size=256)  # a small unembedding keeps generation fast
    return backend, planted_outputs(backend)


def test_true_explanations_are_picked_far_above_chance_and_shuffled_ones_near_it(model):
    """Figures (16 planted latents, 3 repetitions each, run seed 0): true explanations 48/48
    picks (accuracy 1.0); explanations shuffled by one latent 16/48 (0.33: 0 for the 3 latents
    whose shuffled word belongs to one of their random arms, guesses elsewhere); chance 1/3."""
    backend, coder = model
    scorer = OutputEvalScorer()  # the paper's setting: KL 0.5, 3 prompts, 25 tokens at 0.75
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": ScriptedProvider(judge)})
    true, shuffled = [], []
    for latent, word in enumerate(WORDS):
        record = bare(coder, latent)
        s = run(scorer, record, f'the word "{word}"', ctx)
        assert s.status is Status.OK, s.error
        true.append(s.value)
        other = WORDS[(latent + 1) % len(WORDS)]
        shuffled.append(run(scorer, record, f'the word "{other}"', ctx).value)
    assert np.mean(true) == 1.0
    assert abs(np.mean(shuffled) - 1 / 3) < 0.12, shuffled
    assert np.mean(shuffled) == pytest.approx(16 / 48)


def test_the_evidence_shows_sets_orders_answers_and_strengths(model):
    backend, coder = model
    llm = ScriptedProvider(judge)
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": llm}, seed=5)
    record = bare(coder, 2)
    calls = []
    generate = backend.generate

    def counted(prompts, edits=(), **kw):
        calls.append((len(prompts), len(edits)))
        return generate(prompts, edits, **kw)

    backend.generate = counted  # type: ignore[method-assign]
    try:
        s = check_scorer(OutputEvalScorer(), record, said(record, 'the word "violin"'), ctx)
    finally:
        del backend.generate
    assert calls == [(3, 1)] * 3  # one batched call per arm, all three prompts in it
    assert s.value == 1.0 and s.metrics["chance"] == pytest.approx(1 / 3)
    assert s.metrics["n_repetitions"] == 3 and s.metrics["n_answered"] == 3
    assert s.metrics["strength_reached"] == 1.0 and s.metrics["n_unreached"] == 0
    assert abs(s.metrics["kl_reached"] - 0.5) <= 0.05
    sets = s.evidence["sets"]
    assert [x["role"] for x in sets] == ["explained", "random", "random"]
    assert sets[0]["latent"] == 2 and len({x["latent"] for x in sets}) == 3
    assert all(x["strength"]["reached"] and len(x["continuations"]) == 3 for x in sets)
    mentions = [sum(c.count("violin") for c in x["continuations"]) for x in sets]
    assert mentions[0] > 10 * max(1, *mentions[1:]), mentions  # the word the latent writes
    trials = s.evidence["trials"]
    # the explained set's slot visits every position; the judge saw exactly that order
    assert sorted(t["target_slot"] for t in trials) == [1, 2, 3]
    for t, request in zip(trials, llm.requests, strict=True):
        assert t["order"][t["target_slot"] - 1] == 2 and t["picked_latent"] == 2
        assert t["answer"].endswith(f"Answer: {t['target_slot']}")
        blocks = request.messages[-1].content.split("Set ")[1:]
        assert "violin" in blocks[t["target_slot"] - 1]
    assert [p.predicted for p in s.predictions] == [True] * 3
    assert s.usage.calls == 3


def test_an_unreachable_strength_is_reported(model):
    """A latent with a zero decoder row cannot move the model: reached False, in the evidence."""
    backend, _ = model
    coder = planted_outputs(backend)
    coder.W_dec[0] = 0.0
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": ScriptedProvider(judge)})
    s = run(OutputEvalScorer(max_steps=4), bare(coder, 0), 'the word "cat"', ctx)
    assert s.status is Status.OK
    assert s.metrics["strength_reached"] == 0.0 and s.metrics["n_unreached"] >= 1
    assert 0 in s.evidence["unreached"]
    assert s.evidence["sets"][0]["strength"]["reached"] is False


def test_an_unparseable_answer_is_an_error_prediction_and_leaves_the_cache(model, tmp_path):
    backend, coder = model
    answers = iter(["Answer: 1", "I cannot tell.", "Answer: 7"])
    llm = ScriptedProvider(lambda r: next(answers))
    provider = wrap_provider(llm, cache=ResponseCache(tmp_path), retry={"base_delay": 0.001})
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": provider})
    s = run(OutputEvalScorer(), bare(coder, 1), 'the word "river"', ctx)
    assert s.status is Status.OK and s.partial
    assert [p.predicted is None for p in s.predictions] == [False, True, True]
    assert all("ParseError" in (p.error or "") for p in s.predictions[1:])
    assert s.metrics["n_answered"] == 1 and s.usage.calls == 3
    assert len(provider.cache) == 1  # only the answer that was used stays cached


def test_no_usable_answer_is_an_error_score(model):
    backend, coder = model
    ctx = MethodContext(
        backend=backend, coder=coder, providers={"scorer": ScriptedProvider(lambda r: "hmm")}
    )
    s = run(OutputEvalScorer(), bare(coder, 1), 'the word "river"', ctx)
    assert s.status is Status.ERROR and "ParseError" in (s.error or "")
    assert s.usage.calls == 3


def test_missing_model_or_bad_settings_fail_before_any_call(model):
    backend, coder = model
    llm = ScriptedProvider(judge)
    record = bare(coder, 0)
    s = run(OutputEvalScorer(), record, "cats", MethodContext(providers={"scorer": llm}))
    assert s.status is Status.ERROR and "coder" in (s.error or "") and llm.requests == []
    with pytest.raises(ConfigError, match="n_prompts"):
        OutputEvalScorer(prompts=["The"], n_prompts=2)
    with pytest.raises(ConfigError, match="repetitions"):
        OutputEvalScorer(repetitions=0)
    with pytest.raises(ConfigError, match="n_random"):
        OutputEvalScorer(n_random=15).preflight(MethodContext(backend=backend, coder=coder))


@pytest.mark.parametrize(
    ("answer", "picked"),
    [
        ("Answer: 2", 1),
        ("Set 1 mentions cats.\nSet 3 mentions rivers.\n**Answer:** Set 3", 2),
        ("The answer is (B).", 1),
        ("3", 2),
        ("C.", 2),
        ("Set 2, because it talks about violins.", 1),
        ("answer: 1\nOn reflection, Answer: 2", 1),
    ],
)
def test_parse_choice_reads_numbers_and_letters(answer, picked):
    assert parse_choice(answer, 3) == picked


@pytest.mark.parametrize("answer", ["", "I am not sure.", "Answer: 4", "Answer: D", "a set"])
def test_parse_choice_refuses_what_names_no_set(answer):
    with pytest.raises(ParseError):
        parse_choice(answer, 3)


def test_random_latents_and_slot_orders():
    drawn = random_latents(16, 5, 2, seed=1)
    assert len(set(drawn)) == 2 and 5 not in drawn and all(0 <= d < 16 for d in drawn)
    assert random_latents(3, 1, 2, seed=0) == [0, 2] or random_latents(3, 1, 2, seed=0) == [2, 0]
    with pytest.raises(ConfigError):
        random_latents(2, 0, 2, seed=0)
    orders = slot_orders(3, 6, seed=3)
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    slots = [o.index(0) for o in orders]
    assert sorted(slots) == [0, 0, 1, 1, 2, 2]  # every slot twice in six repetitions
