"""`ChatRequest.prefill` through litellm: Anthropic models continue a trailing assistant message
(their "prefill"); every other model refuses the request before any call."""

from __future__ import annotations

import pytest
from saexplain_litellm.litellm_provider import LiteLLMProvider

from saexplain.errors import ProviderBadRequestError
from saexplain.models import ChatRequest, Message

ANTHROPIC = "anthropic/claude-3-5-haiku-20241022"


def prefilled() -> ChatRequest:
    return ChatRequest(
        messages=(Message(role="user", content="Is 7 odd? Reply 1 or 0."),),
        prefill="Answer: ",
        max_tokens=1,
    )


def test_only_anthropic_models_say_they_can_prefill():
    assert LiteLLMProvider(ANTHROPIC).capabilities.prefill
    assert not LiteLLMProvider("gpt-4o-mini").capabilities.prefill
    assert not LiteLLMProvider("hosted_vllm/m", api_base="http://127.0.0.1:1").capabilities.prefill


def test_anthropic_gets_the_prefill_as_a_trailing_assistant_message():
    kwargs = LiteLLMProvider(ANTHROPIC).litellm_kwargs(prefilled())
    assert kwargs["messages"][-1] == {"role": "assistant", "content": "Answer: "}
    plain = LiteLLMProvider(ANTHROPIC).litellm_kwargs(
        prefilled().model_copy(update={"prefill": None})
    )
    assert plain["messages"][-1]["role"] == "user"


async def test_other_models_refuse_a_prefilled_request_without_calling(monkeypatch):
    calls: list[object] = []

    async def never(**kwargs: object) -> None:
        calls.append(kwargs)

    import litellm

    monkeypatch.setattr(litellm, "acompletion", never)
    provider = LiteLLMProvider("gpt-4o-mini", mock_response="1")
    with pytest.raises(ProviderBadRequestError, match="prefilled reply"):
        await provider.complete(prefilled())
    assert calls == []
