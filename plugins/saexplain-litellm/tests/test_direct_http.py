"""The opt-in direct OpenAI-compatible HTTP path, against an in-process server on loopback."""

from __future__ import annotations

import gc
import logging
import warnings

import pytest
from aiohttp import web
from saexplain_litellm.litellm_provider import LiteLLMProvider

from saexplain.errors import ProviderAuthError, ProviderBadRequestError, ProviderServerError
from saexplain.models import ChatRequest, Message
from saexplain.providers import ProviderLayer, RetryPolicy, close_providers, wrap_provider

SECRET = "sk-direct-SECRET-abcdefghijklmnop"


def req(text: str = "hi", **kw) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **kw)


@pytest.fixture
async def server():
    state = {"calls": 0, "bodies": [], "headers": [], "script": []}

    async def completions(request: web.Request) -> web.Response:
        state["calls"] += 1
        body = await request.json()
        state["bodies"].append(body)
        state["headers"].append(dict(request.headers))
        if state["script"]:
            fault = state["script"].pop(0)
            if fault in MALFORMED:
                return MALFORMED[fault]()
            return web.Response(status=fault, text=f"error {fault} for key {SECRET}")
        logprobs = None
        if body.get("logprobs"):
            alts = [{"token": "ok", "logprob": -0.2}, {"token": "no", "logprob": -1.8}]
            logprobs = {"content": [{"token": "ok", "logprob": -0.2, "top_logprobs": alts}]}
        choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}}
        choice |= {"finish_reason": "stop", "logprobs": logprobs}
        usage = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
        return web.json_response({"model": body["model"], "choices": [choice], "usage": usage})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state["url"] = f"http://127.0.0.1:{port}/v1"
    yield state
    await runner.cleanup()


# Replies a faulty server gives with status 200: cut short, without choices, not an object.
MALFORMED = {
    "truncated": lambda: web.Response(
        text='{"model": "my-model", "choices": [{"index": 0, "mess', content_type="application/json"
    ),
    "no choices": lambda: web.json_response({"model": "my-model", "usage": {}}),
    "empty choices": lambda: web.json_response({"model": "my-model", "choices": []}),
    "a list": lambda: web.json_response([1, 2]),
    "bad usage": lambda: web.json_response(
        {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": "many"}}
    ),
}


def make(server, attempts: int = 5, **kw) -> ProviderLayer:
    """The adapter inside saexplain's middleware, as a run uses it (retries, no cache)."""
    adapter = LiteLLMProvider(
        "hosted_vllm/my-model", api_base=server["url"], direct_http=True, logprobs=True, **kw
    )
    return wrap_provider(adapter, cache=False, retry=RetryPolicy(attempts, 0.001, 0.002))


async def test_direct_http_answers_with_logprobs_and_retries(server):
    server["script"] = [429, 503]
    provider = make(server, api_key=SECRET)
    response = await provider.complete(req(logprobs=True, top_logprobs=2))
    await provider.aclose()
    assert response.text == "ok" and response.usage.prompt_tokens == 7
    assert response.choices[0].logprobs[0].top == (("ok", -0.2), ("no", -1.8))
    assert server["calls"] == 3 and provider.retry_stats.retries == 2
    assert server["bodies"][-1]["model"] == "my-model" and server["bodies"][-1]["top_logprobs"] == 2


async def test_direct_http_sends_extra_headers_as_headers_not_in_the_body(server):
    provider = make(server, api_key=SECRET, params={"extra_headers": {"X-Tenant": "lab-7"}})
    await provider.complete(req())
    await provider.aclose()
    assert server["headers"][-1]["X-Tenant"] == "lab-7"
    assert server["headers"][-1]["Authorization"] == f"Bearer {SECRET}"
    assert "extra_headers" not in server["bodies"][-1]


async def test_direct_http_auth_and_bad_request_fail_fast_without_secrets(server, monkeypatch):
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    server["script"] = [401]
    provider = make(server, api_key_env="MY_VLLM_KEY")
    with pytest.raises(ProviderAuthError, match="MY_VLLM_KEY") as info:
        await provider.complete(req())
    assert SECRET not in str(info.value) and server["calls"] == 1
    server["script"] = [400]
    with pytest.raises(ProviderBadRequestError):
        await provider.complete(req("other"))
    await provider.aclose()
    assert server["calls"] == 2


async def test_direct_http_malformed_replies_are_typed_retryable_errors(server):
    server["script"] = list(MALFORMED)
    provider = make(server, attempts=len(MALFORMED) + 1)
    response = await provider.complete(req())
    assert response.text == "ok" and server["calls"] == len(MALFORMED) + 1
    assert provider.retry_stats.by_error == {"ProviderServerError": len(MALFORMED)}
    once = make(server, attempts=1)
    for fault in MALFORMED:
        server["script"] = [fault]
        with pytest.raises(ProviderServerError, match="malformed reply") as info:
            await once.complete(req(fault))
        assert info.value.retryable and info.value.__cause__ is None
    await close_providers({"explainer": provider, "scorer": once})


async def test_direct_http_sessions_are_closed(server, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make(server)
    await provider.complete(req())
    adapter = provider.innermost
    first = adapter._session
    adapter._session_loop = object()  # as if the session came from an earlier event loop
    await provider.complete(req("again"))
    assert first.closed and adapter._session is not first
    await close_providers({"explainer": provider})  # what the pipeline does at the end of a run
    assert adapter._session is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del first
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]
    assert "Unclosed" not in caplog.text
