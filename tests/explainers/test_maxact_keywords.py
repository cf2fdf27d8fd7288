"""maxact's `style="keywords"` (for small local models) and the instruction-echo flag.

A scripted provider stands in for SmolLM2: it records the request (the prefill and stops sent,
no few-shot answer, the marked tokens listed) and returns what follows the prefill.
"""

from __future__ import annotations

import pytest

from saexplain.errors import ConfigError
from saexplain.explainers.maxact import MaxAct, marked_tokens
from saexplain.explainers.vocabproj import VocabProj
from saexplain.methods.generic import DUPLICATE, ECHO, generic_reasons
from saexplain.models import ChatResponse, Choice, Status
from saexplain.protocols import MethodContext
from saexplain.testing import FakeBackend, FakeCoder, ScriptedProvider, make_record

TEXTS = [
    "The cat sat on the warm mat",
    "A black cat chased the small dog",
    "My cat likes fish and milk",
    "Her old cat slept all day",
    "Every cat in town came home",
    "That cat never misses dinner",
    "Birds sing in the morning light",
    "The market opens at nine",
    "Rain fell on the quiet street",
    "Children played in the park",
]


@pytest.fixture(scope="module")
def world():
    backend = FakeBackend(seed=0)
    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    backend.tokenize(TEXTS)
    return backend, coder, make_record(backend, coder, 3, TEXTS)


def ctx_for(backend, coder, provider):
    return MethodContext(backend=backend, coder=coder, providers={"explainer": provider}, seed=0)


async def test_keywords_prefills_lists_the_marked_tokens_and_parses_the_short_label(world):
    backend, coder, record = world
    provider = ScriptedProvider(['the word cat" in sentences about pets'], prefill=True)
    explainer = MaxAct(style="keywords")
    explainer.preflight(ctx_for(backend, coder, provider))  # a prefilling provider: accepted
    result = await explainer.explain(record, ctx_for(backend, coder, provider))

    request = provider.requests[0]
    assert request.prefill == 'The marked tokens are "'
    assert request.stop == ("\n", '"')
    assert request.max_tokens == 16  # the keywords style's default budget
    # no few-shot turn to copy: system, then the one user turn with the live examples
    assert [m.role for m in request.messages] == ["system", "user"]
    assert "closing parenthesis" not in "".join(m.content for m in request.messages)
    user = request.messages[1].content
    assert 'Marked tokens, most frequent first: "cat"' in user
    assert "<<cat>>" in user
    # the label ends at the first stop (the closing quote), whatever the provider returned after
    assert result.status is Status.OK, result.error
    assert result.text == "the word cat"
    assert result.evidence["parse"] == "prefilled"
    assert result.evidence["marked"] == ["cat"]
    assert result.settings["style"] == "keywords"


async def test_a_keywords_label_cut_by_the_budget_is_kept_a_runon_is_not(world):
    backend, coder, record = world
    cut = ChatResponse(
        model="m", choices=(Choice(text="pet animals such", finish_reason="length"),)
    )
    runon = " ".join(["word"] * 13)
    provider = ScriptedProvider([cut, runon, '"'], prefill=True)
    explainer = MaxAct(style="keywords")
    ctx = ctx_for(backend, coder, provider)

    kept = await explainer.explain(record, ctx)
    assert (kept.status, kept.text) == (Status.OK, "pet animals such")
    assert kept.evidence["parse"] == "prefilled, cut at max_tokens"
    too_long = await explainer.explain(record, ctx)
    assert too_long.status is Status.FAILED and "13 words" in (too_long.error or "")
    empty = await explainer.explain(record, ctx)
    assert empty.status is Status.FAILED and "empty" in (empty.error or "")


async def test_the_other_styles_are_unchanged(world):
    backend, coder, record = world
    provider = ScriptedProvider(["Explanation: the word cat"])
    result = await MaxAct(style="sentence").explain(record, ctx_for(backend, coder, provider))
    request = provider.requests[0]
    assert request.prefill is None and request.stop == ()
    assert "assistant" in [m.role for m in request.messages]  # the few-shot answers
    assert "Marked tokens" not in request.messages[-1].content
    assert result.text == "the word cat"


def test_keywords_refuses_what_it_cannot_do(world):
    backend, coder, _ = world
    with pytest.raises(ConfigError, match="prefilled reply"):
        MaxAct(style="keywords").preflight(ctx_for(backend, coder, ScriptedProvider([])))
    with pytest.raises(ConfigError, match="chain of thought"):
        MaxAct(style="keywords", cot=True)
    with pytest.raises(ConfigError, match="top_logits"):
        MaxAct(style="keywords", top_logits=5)
    with pytest.raises(ConfigError, match="style 'keywords' is not one of"):
        VocabProj(style="keywords")


def test_marked_tokens_counts_examples_most_often_marked_first(world):
    _, _, record = world
    assert marked_tokens(record.explanation_examples, threshold=0.3) == ["cat"]
    assert marked_tokens(record.explanation_examples, threshold=0.3, limit=0) == []


async def test_echoes_of_the_prompt_are_flagged_as_instruction_echo(world):
    backend, coder, record = world
    # three latents answered with the few-shot answer itself (what SmolLM2 did in the demo):
    # alike enough to be near-duplicates, but the prompt is why, and the flag says so
    shot = "the closing parenthesis that ends a function call in source code"
    answers = [f"Explanation: {shot}"] * 3 + [f"Explanation: {t}" for t in ("cats", "dogs")]
    sentence = MaxAct(style="sentence")
    provider = ScriptedProvider(answers)
    done = [await sentence.explain(record, ctx_for(backend, coder, provider)) for _ in answers]
    wording = sentence.prompt_wording()
    assert generic_reasons(done, prompt=wording) == [ECHO] * 3 + [None, None]
    assert generic_reasons(done) == [DUPLICATE] * 3 + [None, None]  # no prompt: no echo check

    # the keywords style: an answer repeating its own question is an echo too
    keywords = MaxAct(style="keywords")
    provider = ScriptedProvider(
        ['what do the marked tokens have in common"', 'cats"'], prefill=True
    )
    done = [await keywords.explain(record, ctx_for(backend, coder, provider)) for _ in range(2)]
    assert [e.status for e in done] == [Status.OK, Status.OK]
    assert generic_reasons(done, prompt=keywords.prompt_wording()) == [ECHO, None]


def test_labels_of_stop_words_only_are_not_near_duplicates_of_each_other():
    # what keywords gave on the demo: one-token labels; "by", "This" and "is" have no content
    # word, which must not make them alike (an empty word set each)
    labels = ["by", "This", "is", "source", "proxy", "patch", "wrapper", "line", "any", "use"]
    assert generic_reasons(labels) == [None] * len(labels)
    assert generic_reasons(["by", "By", "by.", *labels[3:]]) == [DUPLICATE] * 3 + [None] * 7
