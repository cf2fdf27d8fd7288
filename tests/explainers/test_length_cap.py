"""LLM explainers cap what they ask for (`max_tokens`) and what they accept (`max_chars`): a
runaway answer is a failed explanation with the reason, never sent on to every scorer."""

from __future__ import annotations

import pytest

from saexplain.errors import ConfigError
from saexplain.explainers.maxact import MaxAct
from saexplain.models import Status
from saexplain.protocols import MethodContext
from saexplain.testing import FakeBackend, FakeCoder, ScriptedProvider, make_record

TEXTS = ["the cat sat on the mat", "a cat ran far", "the dog sat", "red house on the hill"]


async def explain(answer: str, **settings: object):
    backend = FakeBackend(seed=0)
    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    record = make_record(backend, coder, 3, TEXTS)
    provider = ScriptedProvider([answer])
    ctx = MethodContext(backend=backend, coder=coder, providers={"explainer": provider})
    explanation = await MaxAct(**settings).explain(record, ctx)
    return explanation, provider.requests[0]


async def test_a_runaway_answer_is_failed_with_the_reason():
    explanation, request = await explain("x" * 1_000_000)
    assert explanation.status is Status.FAILED and explanation.text == ""
    assert "1000000 characters, over max_chars=1000" in (explanation.error or "")
    assert request.max_tokens == 200  # the completion budget asked for, by default
    assert len(explanation.evidence["answer"]) < 5000  # the answer is kept only in part
    assert explanation.settings["max_chars"] == 1000  # recorded with the result


async def test_both_caps_are_settings_of_each_explainer():
    ok, request = await explain("Explanation: " + "a" * 40, max_chars=40, max_tokens=30)
    assert ok.status is Status.OK and ok.text == "a" * 40
    assert request.max_tokens == 30
    long, _ = await explain("Explanation: " + "a" * 41, max_chars=40)
    assert long.status is Status.FAILED and "41 characters, over max_chars=40" in long.error
    with pytest.raises(ConfigError, match="max_chars"):
        MaxAct(max_chars=0)
