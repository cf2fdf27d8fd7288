"""LLM explainers hold answers to the explanation style's length bound (a label is a few words,
a sentence one sentence) and never accept an answer cut off by the completion budget."""

from __future__ import annotations

import pytest

from saexplain.errors import ParseError
from saexplain.explainers.maxact import MaxAct
from saexplain.methods import Parsed, bound_explanation
from saexplain.models import ChatResponse, Choice, Explanation, Status
from saexplain.protocols import MethodContext
from saexplain.testing import FakeBackend, FakeCoder, ScriptedProvider, make_record

TEXTS = ["the cat sat on the mat", "a cat ran far", "the dog sat", "red house on the hill"]
RUN_ON = (
    "The latent fires on the word cat in every example. In the first example it marks cat after "
    "the article, in the second one it marks cat as the subject of ran, and in the others it is "
    "quiet because there is no cat at all, which suggests a lexical feature for that word. "
) * 4


async def explain(answer: str | ChatResponse, **settings: object) -> Explanation:
    backend = FakeBackend(seed=0)
    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    record = make_record(backend, coder, 3, TEXTS)
    ctx = MethodContext(
        backend=backend, coder=coder, providers={"explainer": ScriptedProvider([answer])}
    )
    return await MaxAct(**settings).explain(record, ctx)


async def test_an_unmarked_run_on_answer_is_failed_with_the_reason():
    assert len(RUN_ON) > 1000
    explanation = await explain(RUN_ON, max_chars=5000)
    assert explanation.status is Status.FAILED and explanation.text == ""
    assert "sentences" in (explanation.error or "")
    assert explanation.evidence["answer"]  # the answer is kept, for the reader


async def test_a_marked_run_on_answer_keeps_its_first_sentence():
    explanation = await explain(f"Explanation: the word cat. {RUN_ON}", max_chars=5000)
    assert explanation.status is Status.OK and explanation.text == "the word cat."
    assert "first sentence" in str(explanation.evidence["parse"])


async def test_a_label_is_a_few_words():
    ok = await explain("Explanation: the word cat", style="label")
    assert ok.status is Status.OK and ok.text == "the word cat"
    long = await explain("Explanation: " + " ".join(["cat"] * 30), style="label")
    assert long.status is Status.FAILED and "30 words" in (long.error or "")
    assert "label" in (long.error or "")


async def test_a_truncated_answer_is_failed_with_the_reason():
    cut = ChatResponse(
        model="scripted", choices=(Choice(text="The example is an", finish_reason="length"),)
    )
    explanation = await explain(cut)
    assert explanation.status is Status.FAILED and explanation.text == ""
    assert "max_tokens=200" in (explanation.error or "")
    assert "cut off" in (explanation.error or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the word cat", "the word cat"),
        (
            "words such as e.g. Rain and U.S. Army units",
            "words such as e.g. Rain and U.S. Army units",
        ),
        ("numbers like 3.5 and 2.0 in prices", "numbers like 3.5 and 2.0 in prices"),
        ("the word cat! It is common.", "the word cat!"),
        ("the word cat. It is common.", "the word cat."),
    ],
)
def test_the_first_sentence_is_found_without_cutting_abbreviations(text, expected):
    assert bound_explanation(Parsed(text, "marker"), "sentence").text == expected


def test_an_overlong_first_sentence_is_not_a_safe_cut():
    words = " ".join(["word"] * 80)
    with pytest.raises(ParseError, match="80 words"):
        bound_explanation(Parsed(f"{words}. Short one.", "marker"), "sentence")


async def test_a_cut_off_run_on_keeps_a_first_sentence_that_ended_before_the_cut():
    cut = ChatResponse(
        model="scripted",
        choices=(
            Choice(
                text="Explanation:\n- 1. The word cat after an article.\n- 2. The word cat",
                finish_reason="length",
            ),
        ),
    )
    explanation = await explain(cut)
    assert explanation.status is Status.OK
    assert explanation.text == "- 1. The word cat after an article."
    unfinished = cut.model_copy(
        update={"choices": (Choice(text="Explanation: the word cat and", finish_reason="length"),)}
    )
    assert (await explain(unfinished)).status is Status.FAILED
