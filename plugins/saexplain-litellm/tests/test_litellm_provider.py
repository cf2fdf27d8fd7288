"""The litellm provider against litellm's offline mock responses and injected faults."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import time

import litellm
import pytest
from saexplain_litellm import make_litellm_provider
from saexplain_litellm.accounting import Ledger, estimate_cost, usage_tags
from saexplain_litellm.cache import ResponseCache
from saexplain_litellm.litellm_provider import LiteLLMProvider
from saexplain_litellm.retry import RetryPolicy

from saexplain.errors import (
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderServerError,
    SpendCapReached,
)
from saexplain.models import ChatRequest, Message
from saexplain.plugins import PluginManager
from saexplain.testing import check_provider

MODEL = "gpt-4o-mini"
FAST = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.005)
SECRET = "sk-test-THISMUSTNEVERLEAK-0123456789"


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
    provider = LiteLLMProvider(MODEL, mock_response="hello there", cache=False)
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
    assert provider.usage == response.usage
    assert fake.calls == 1


async def test_mocked_logprobs_are_converted(fake):
    provider = LiteLLMProvider(
        MODEL,
        mock_response=logprob_response([("Yes", -0.1, [("Yes", -0.1), ("No", -2.4)])]),
        cache=False,
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
        cache=False,
    )
    assert isinstance(provider, LiteLLMProvider)
    check_provider(provider)


def test_capability_flag_follows_the_model():
    assert LiteLLMProvider(MODEL, cache=False).capabilities.logprobs
    no_lp = LiteLLMProvider("anthropic/claude-3-5-haiku-20241022", cache=False)
    assert not no_lp.capabilities.logprobs and no_lp.capabilities.max_top_logprobs == 0
    forced = LiteLLMProvider(
        "hosted_vllm/my-model", api_base="http://127.0.0.1:1", logprobs=True, cache=False
    )
    assert forced.capabilities.logprobs and forced.capabilities.max_top_logprobs == 20


def test_local_prefix_routes_to_the_in_process_provider():
    provider = make_litellm_provider("local/smollm2", cache=False)
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
    provider = LiteLLMProvider(MODEL, mock_response="ok", cache=False, retry=FAST, seed=1)
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


async def test_retries_give_up_after_max_attempts(monkeypatch):
    fake = CountingCompletion(litellm.acompletion, fault_rate=1.0, errors=[server_error])
    monkeypatch.setattr(litellm, "acompletion", fake)
    provider = LiteLLMProvider(
        MODEL, mock_response="ok", cache=False, retry=RetryPolicy(3, 0.001, 0.002)
    )
    with pytest.raises(ProviderServerError):
        await provider.complete(req())
    assert fake.calls == 3 and provider.retry_stats.failures == 1


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
    provider = LiteLLMProvider(MODEL, cache=False, retry=RetryPolicy(6, 1.0, 5.0))
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
    provider = LiteLLMProvider("anthropic/claude-3-5-haiku-20241022", cache=False, retry=FAST)
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
    provider = LiteLLMProvider(MODEL, cache=False, retry=FAST)
    with pytest.raises(ProviderBadRequestError, match="context too long"):
        await provider.complete(req())
    assert fake.calls == 1


# --- spend cap, accounting ------------------------------------------------------------------------


async def test_spend_cap_stops_new_calls_at_the_cap(fake):
    probe = await LiteLLMProvider(
        MODEL, mock_response="four words of answer", cache=False
    ).complete(req())
    per_call = probe.usage.cost_usd
    assert per_call > 0
    cap = 5.5 * per_call
    provider = LiteLLMProvider(
        MODEL, mock_response="four words of answer", cache=False, spend_cap_usd=cap
    )
    done, refused = 0, 0
    for _ in range(20):
        try:
            await provider.complete(req())
            done += 1
        except SpendCapReached as error:
            refused += 1
            assert "spend cap" in str(error)
    assert done == 6 and refused == 14  # the 6th call crosses the cap; nothing starts after it
    assert cap <= provider.ledger.spent_usd <= cap + per_call
    assert fake.calls == 1 + 6
    assert provider.retry_stats.retries == 0  # the cap is never retried


async def test_spend_cap_shared_by_concurrent_callers(fake):
    ledger = Ledger(spend_cap_usd=1e-5)
    a = LiteLLMProvider(
        MODEL, mock_response="answer", cache=False, ledger=ledger, max_concurrency=4
    )
    b = LiteLLMProvider(
        "gpt-4o", mock_response="answer", cache=False, ledger=ledger, max_concurrency=4
    )
    results = await asyncio.gather(
        *(p.complete(req(f"q{i}")) for i in range(100) for p in (a, b)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, SpendCapReached)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert refused and ok and len(refused) + len(ok) == 200
    most_expensive = max(r.usage.cost_usd for r in ok)
    assert ledger.spent_usd <= 1e-5 + 8 * most_expensive  # at most the in-flight calls overshoot


async def test_usage_is_aggregated_by_tags(fake):
    provider = LiteLLMProvider(MODEL, mock_response="fine", cache=False)
    with usage_tags(run="r1", method="maxact"):
        for latent in ("a", "b", "a"):
            with usage_tags(latent=latent):
                await provider.complete(req(f"explain {latent}"))
        await provider.complete(req("scoring"), tags={"method": "detection", "latent": "b"})
    ledger = provider.ledger
    assert set(ledger.by("latent")) == {"a", "b"}
    assert ledger.by("latent")["a"].calls == 2 and ledger.by("latent")["b"].calls == 2
    assert ledger.by("method")["maxact"].calls == 3 and ledger.by("method")["detection"].calls == 1
    assert ledger.by("run")["r1"] == ledger.total
    assert ledger.where(latent="b", method="detection").calls == 1
    total = sum(u.cost_usd for u in ledger.by("latent").values())
    assert total == pytest.approx(ledger.total.cost_usd) and total > 0


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


# --- cache ----------------------------------------------------------------------------------------


async def test_cache_makes_reruns_free_and_survives_corruption(fake, tmp_path):
    cache = ResponseCache(tmp_path / "c")
    provider = LiteLLMProvider(MODEL, mock_response="cached answer", cache=cache)
    first = await provider.complete(req())
    again = await LiteLLMProvider(
        MODEL, mock_response="cached answer", cache=tmp_path / "c"
    ).complete(req())
    assert fake.calls == 1
    assert again.text == first.text and again.usage.cost_usd == 0 and again.usage.cached_calls == 1
    different = await provider.complete(req(temperature=0.5))
    assert fake.calls == 2 and different.usage.calls == 1
    files = sorted((tmp_path / "c").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    entries = [f for f in files if f.suffix == ".json"]
    assert len(entries) == 2
    for entry in entries:
        entry.write_text(entry.read_text()[:25])  # truncate: corrupt
    fresh = LiteLLMProvider(MODEL, mock_response="cached answer", cache=tmp_path / "c")
    assert (await fresh.complete(req())).usage.calls == 1
    assert fresh.cache.corrupt == 1 and fake.calls == 3
    json.loads(
        fresh.cache.path(next(iter(fresh.cache.directory.glob("*/*.json"))).stem).read_text()
    )


# --- limits ---------------------------------------------------------------------------------------


async def test_concurrency_limit_bounds_calls_in_flight(monkeypatch):
    fake = CountingCompletion(litellm.acompletion, delay=0.02)
    monkeypatch.setattr(litellm, "acompletion", fake)
    provider = LiteLLMProvider(MODEL, mock_response="x", cache=False, max_concurrency=3)
    await asyncio.gather(*(provider.complete(req(f"{i}")) for i in range(12)))
    assert fake.peak == 3 and provider.limit.peak == 3


async def test_per_model_rate_limit_spaces_calls(fake):
    provider = LiteLLMProvider("gpt-4o", mock_response="x", cache=False, requests_per_minute=600)
    start = time.perf_counter()
    await asyncio.gather(*(provider.complete(req(f"{i}")) for i in range(5)))
    assert time.perf_counter() - start >= 0.39  # 4 intervals of 0.1 s


# --- secrets --------------------------------------------------------------------------------------


async def test_api_keys_never_in_logs_caches_or_errors(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    explicit = "explicit-key-" + "Z" * 20
    provider = LiteLLMProvider(MODEL, mock_response="hi", api_key=explicit, cache=tmp_path / "c")
    await provider.complete(req())
    await provider.complete(req())
    leaked = [explicit, SECRET]

    def server(model):
        return litellm.InternalServerError(
            message=f"upstream echoed {SECRET} and {explicit}", llm_provider="openai", model=model
        )

    fake = CountingCompletion(litellm.acompletion, fault_rate=1.0, errors=[server])
    monkeypatch.setattr(litellm, "acompletion", fake)
    failing = LiteLLMProvider(
        MODEL, api_key=explicit, cache=False, retry=RetryPolicy(2, 0.001, 0.001)
    )
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
