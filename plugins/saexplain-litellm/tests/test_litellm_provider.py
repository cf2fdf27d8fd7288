"""The litellm adapter against litellm's offline mock responses and injected faults.

The adapter makes one attempt per call; retries, cache, limits and accounting are saexplain's
middleware (tested in the core's tests/providers), so fault tests run the adapter inside
`wrap_provider`, as a run does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
import time

import litellm
import pytest
from saexplain_litellm import make_litellm_provider
from saexplain_litellm.costs import estimate_cost
from saexplain_litellm.litellm_provider import LiteLLMProvider

from saexplain.errors import (
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderServerError,
)
from saexplain.models import ChatRequest, Message, RunConfig
from saexplain.plugins import PluginManager
from saexplain.providers import ProviderLayer, RetryPolicy, wrap_provider
from saexplain.providers.build import build_providers
from saexplain.testing import check_provider

MODEL = "gpt-4o-mini"
FAST = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.005)
SECRET = "sk-test-THISMUSTNEVERLEAK-0123456789"


def wrapped(model: str = MODEL, *, retry: RetryPolicy = FAST, **settings) -> ProviderLayer:
    """The adapter inside the core's middleware, without a cache."""
    return wrap_provider(LiteLLMProvider(model, **settings), cache=False, retry=retry, seed=1)


def req(text: str = "Say yes.", **kw) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **kw)


def logprob_response(
    tokens: list[tuple[str, float, list[tuple[str, float]]]],
) -> litellm.ModelResponse:
    content = [
        {
            "token": t,
            "logprob": lp,
            "bytes": None,
            "top_logprobs": [{"token": a, "logprob": alp, "bytes": None} for a, alp in top],
        }
        for t, lp, top in tokens
    ]
    return litellm.ModelResponse(
        id="mock",
        object="chat.completion",
        created=0,
        model=MODEL,
        choices=[
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "".join(t for t, _, _ in tokens)},
                "logprobs": {"content": content},
            }
        ],
        usage={
            "prompt_tokens": 12,
            "completion_tokens": len(tokens),
            "total_tokens": 12 + len(tokens),
        },
    )


class CountingCompletion:
    """Wraps litellm.acompletion: counts calls, injects faults chosen by a seeded RNG."""

    def __init__(
        self, real, *, fault_rate: float = 0.0, seed: int = 0, errors=None, delay: float = 0.0
    ):
        self.real = real
        self.calls = 0
        self.faults: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.errors = errors or []
        self.delay = delay
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, **kwargs):
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.errors and self.rng.random() < self.fault_rate:
                make = self.rng.choice(self.errors)
                error = make(kwargs["model"])
                self.faults[type(error).__name__] = self.faults.get(type(error).__name__, 0) + 1
                raise error
            return await self.real(**kwargs)
        finally:
            self.in_flight -= 1


def rate_limited(model):
    return litellm.RateLimitError(message="429 slow down", llm_provider="openai", model=model)


def server_error(model):
    return litellm.InternalServerError(message="500 boom", llm_provider="openai", model=model)


def timeout(model):
    return litellm.Timeout(message="request timed out", model=model, llm_provider="openai")


@pytest.fixture
def fake(monkeypatch):
    wrapper = CountingCompletion(litellm.acompletion)
    monkeypatch.setattr(litellm, "acompletion", wrapper)
    return wrapper


# --- basics ---------------------------------------------------------------------------------------


async def test_mock_response_text_usage_and_cost(fake):
    provider = LiteLLMProvider(MODEL, mock_response="hello there")
    response = await provider.complete(req(n=2))
    assert [c.text for c in response.choices] == ["hello there", "hello there"]
    assert response.usage.calls == 1 and response.usage.prompt_tokens > 0
    prompt_price, completion_price = litellm.cost_per_token(
        model=MODEL, prompt_tokens=1, completion_tokens=1
    )
    expected = (
        response.usage.prompt_tokens * prompt_price
        + response.usage.completion_tokens * completion_price
    )
    assert response.usage.cost_usd == pytest.approx(expected, rel=1e-6) and expected > 0
    assert fake.calls == 1


async def test_mocked_logprobs_are_converted(fake):
    provider = LiteLLMProvider(
        MODEL,
        mock_response=logprob_response([("Yes", -0.1, [("Yes", -0.1), ("No", -2.4)])]),
    )
    assert provider.capabilities.logprobs and provider.capabilities.max_top_logprobs >= 2
    response = await provider.complete(req(logprobs=True, top_logprobs=2))
    (lp,) = response.choices[0].logprobs
    assert lp.token == "Yes" and lp.logprob == pytest.approx(-0.1)
    assert lp.top == (("Yes", -0.1), ("No", -2.4))
    assert response.usage.prompt_tokens == 12 and response.usage.completion_tokens == 1


def test_contract_through_the_registered_factory():
    manager = PluginManager(entry_points=[], builtins=())
    manager.register_plugin(sys.modules["saexplain_litellm"], name="litellm-test")
    assert {"litellm", "local"} <= set(manager.providers.names())
    provider = manager.providers.create(
        "litellm",
        MODEL,
        mock_response=logprob_response([("yes", -0.05, [("yes", -0.05)])]),
    )
    assert isinstance(provider, LiteLLMProvider)
    check_provider(provider)


def test_capability_flag_follows_the_model():
    assert LiteLLMProvider(MODEL).capabilities.logprobs
    no_lp = LiteLLMProvider("anthropic/claude-3-5-haiku-20241022")
    assert not no_lp.capabilities.logprobs and no_lp.capabilities.max_top_logprobs == 0
    forced = LiteLLMProvider("hosted_vllm/my-model", api_base="http://127.0.0.1:1", logprobs=True)
    assert forced.capabilities.logprobs and forced.capabilities.max_top_logprobs == 20


def test_local_prefix_routes_to_the_in_process_provider():
    provider = make_litellm_provider("local/smollm2")
    assert provider.name == "local" and provider.model == "smollm2"
    assert provider.capabilities.logprobs


def test_import_is_light():
    code = (
        "import sys, saexplain_litellm; "
        "print([m for m in ('litellm', 'torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- faults and retries ---------------------------------------------------------------------------


async def test_thirty_percent_mixed_faults_every_request_completes(monkeypatch):
    fake = CountingCompletion(
        litellm.acompletion, fault_rate=0.3, seed=7, errors=[rate_limited, server_error, timeout]
    )
    monkeypatch.setattr(litellm, "acompletion", fake)
    provider = wrapped(mock_response="ok")
    requests = [req(f"question {i}") for i in range(120)]
    responses = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert all(r.text == "ok" for r in responses)
    injected = sum(fake.faults.values())
    assert set(fake.faults) == {"RateLimitError", "InternalServerError", "Timeout"}
    assert 0.2 < injected / fake.calls < 0.4, (injected, fake.calls)
    stats = provider.retry_stats
    assert stats.retries == injected and stats.failures == 0
    assert stats.attempts == fake.calls == len(requests) + injected
    assert stats.by_error == {
        "ProviderRateLimitError": fake.faults["RateLimitError"],
        "ProviderServerError": fake.faults["InternalServerError"],
        "ProviderTimeoutError": fake.faults["Timeout"],
    }
    assert provider.usage.calls == len(requests)  # failed attempts are not billed


@pytest.mark.parametrize("key_set", [False, True])
async def test_auth_errors_fail_fast_naming_model_and_key(monkeypatch, key_set):
    if key_set:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def auth(model):
        return litellm.AuthenticationError(
            message=f"Incorrect API key provided: {SECRET}", llm_provider="openai", model=model
        )

    fake = CountingCompletion(litellm.acompletion, fault_rate=1.0, errors=[auth])
    monkeypatch.setattr(litellm, "acompletion", fake)
    provider = wrapped(retry=RetryPolicy(6, 1.0, 5.0))
    start = time.perf_counter()
    with pytest.raises(ProviderAuthError) as info:
        await provider.complete(req())
    assert time.perf_counter() - start < 0.5 and fake.calls == 1
    message = str(info.value)
    assert MODEL in message and SECRET not in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # nothing chained
    if key_set:
        assert "rejected" in message
    else:
        assert "OPENAI_API_KEY" in message and "missing" in message


async def test_real_missing_key_message_without_mock(monkeypatch):
    """No mock: litellm itself refuses (no network is reached without a key)."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    provider = wrapped("anthropic/claude-3-5-haiku-20241022")
    with pytest.raises((ProviderAuthError, ProviderBadRequestError)) as info:
        await provider.complete(req())
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert provider.retry_stats.attempts == 1


async def test_bad_request_is_not_retried(monkeypatch):
    def bad(model):
        return litellm.BadRequestError(
            message="context too long", llm_provider="openai", model=model
        )

    fake = CountingCompletion(litellm.acompletion, fault_rate=1.0, errors=[bad])
    monkeypatch.setattr(litellm, "acompletion", fake)
    provider = wrapped()
    with pytest.raises(ProviderBadRequestError, match="context too long"):
        await provider.complete(req())
    assert fake.calls == 1


# --- costs and the middleware -----------------------------------------------------------------


def test_dry_run_estimate_uses_the_offline_price_table():
    requests = [req("hello world " * 10, max_tokens=50, n=2) for _ in range(3)]
    est = estimate_cost(MODEL, requests)
    prompt_price, completion_price = litellm.cost_per_token(
        model=MODEL, prompt_tokens=1, completion_tokens=1
    )
    assert est.requests == 3 and est.completion_tokens == 3 * 50 * 2 and est.priced
    assert est.prompt_tokens > 3 * 20
    assert est.cost_usd == pytest.approx(est.prompt_tokens * prompt_price + 300 * completion_price)
    unknown = estimate_cost("hosted_vllm/some-local-model", requests)
    assert not unknown.priced and unknown.cost_usd == 0.0
    assert estimate_cost("local/smollm2", requests).cost_usd == 0.0


async def test_a_run_builds_the_adapter_inside_the_middleware(fake, tmp_path):
    """Middleware settings go to the core's layers, the rest to the factory; with a spend cap
    set, the factory still gets only its own settings."""
    manager = PluginManager(entry_points=[], builtins=())
    manager.register_plugin(sys.modules["saexplain_litellm"], name="litellm-test")
    spec = {
        "provider": "litellm",
        "model": MODEL,
        "settings": {"mock_response": "fine", "max_attempts": 2, "requests_per_minute": 6000},
    }
    config = RunConfig(
        model="m",
        coder="c",
        dataset="d",
        output_dir=str(tmp_path),
        explainer_model=spec,
        spend_cap_usd=1.0,
    )
    explainer = type("LegacyMethod", (), {})()  # declares no needs: it uses a provider
    (provider,) = build_providers(config, manager, {"m": explainer}, {}).values()
    assert isinstance(provider.innermost, LiteLLMProvider)
    assert provider.retry_policy.max_attempts == 2 and provider.ledger.spend_cap_usd == 1.0
    first = await provider.complete(req())
    again = await provider.complete(req())
    assert first.text == again.text == "fine" and fake.calls == 1  # the second from the cache
    assert provider.ledger.total.calls == 1 and provider.ledger.total.cached_calls == 1
    assert first.usage.cost_usd > 0
    assert provider.ledger.spent_usd == pytest.approx(first.usage.cost_usd)


# --- secrets --------------------------------------------------------------------------------------


async def test_api_keys_never_in_logs_caches_or_errors(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    explicit = "explicit-key-" + "Z" * 20
    adapter = LiteLLMProvider(MODEL, mock_response="hi", api_key=explicit)
    provider = wrap_provider(adapter, cache=tmp_path / "c", cache_scope={"api_key": explicit})
    await provider.complete(req())
    await provider.complete(req())
    leaked = [explicit, SECRET]

    def server(model):
        return litellm.InternalServerError(
            message=f"upstream echoed {SECRET} and {explicit}", llm_provider="openai", model=model
        )

    fake = CountingCompletion(litellm.acompletion, fault_rate=1.0, errors=[server])
    monkeypatch.setattr(litellm, "acompletion", fake)
    failing = wrapped(api_key=explicit, retry=RetryPolicy(2, 0.001, 0.001))
    with pytest.raises(ProviderServerError) as info:
        await failing.complete(req("other"))
    texts = [str(info.value), repr(info.value), caplog.text]
    texts += [p.read_text() for p in (tmp_path / "c").rglob("*.json")]
    assert len(texts) > 3
    for text in texts:
        for secret in leaked:
            assert secret not in text
    assert "***" in str(info.value)


def test_check_ready_names_the_missing_key(monkeypatch):
    from saexplain_litellm.litellm_provider import LiteLLMProvider

    from saexplain.errors import ProviderAuthError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = LiteLLMProvider("gpt-4o-mini")
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        provider.check_ready()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    provider.check_ready()
    assert LiteLLMProvider("gpt-4o-mini", api_key_env="MY_KEY").estimate_cost(1000, 100) > 0
    with pytest.raises(ProviderAuthError, match="MY_KEY"):
        LiteLLMProvider("gpt-4o-mini", api_key_env="MY_KEY").check_ready()
