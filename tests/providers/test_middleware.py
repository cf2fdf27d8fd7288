"""The provider middleware of the core (`saexplain.providers`) around a provider double."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from saexplain.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderRateLimitError,
    ProviderServerError,
    ProviderTimeoutError,
    SpendCapReached,
)
from saexplain.protocols import Provider
from saexplain.providers import (
    Ledger,
    ResponseCache,
    RetryPolicy,
    cache_key,
    current_latent,
    current_method,
    default_cache_dir,
    split_settings,
    usage_tags,
    wrap_provider,
)

from .fakes import FakeLLM, req

FAST = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.005)
SECRET = "sk-test-THISMUSTNEVERLEAK-0123456789"


def rate_limited(model: str) -> ProviderRateLimitError:
    return ProviderRateLimitError("429 slow down", model=model)


def server_error(model: str) -> ProviderServerError:
    return ProviderServerError("500 boom", model=model)


def timeout(model: str) -> ProviderTimeoutError:
    return ProviderTimeoutError("timed out", model=model)


# --- retries --------------------------------------------------------------------------------------


async def test_thirty_percent_mixed_faults_every_request_completes():
    fake = FakeLLM(fault_rate=0.3, seed=7, errors=[rate_limited, server_error, timeout])
    provider = wrap_provider(fake, cache=False, retry=FAST, seed=1)
    requests = [req(f"question {i}") for i in range(120)]
    responses = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert all(r.text == "ok" for r in responses)
    injected = sum(fake.faults.values())
    assert set(fake.faults) == {
        "ProviderRateLimitError",
        "ProviderServerError",
        "ProviderTimeoutError",
    }
    assert 0.2 < injected / fake.calls < 0.4, (injected, fake.calls)
    stats = provider.retry_stats
    assert stats.retries == injected and stats.failures == 0
    assert stats.attempts == fake.calls == len(requests) + injected
    assert stats.by_error == fake.faults
    assert provider.usage.calls == len(requests)  # failed attempts are not billed


async def test_retries_give_up_after_max_attempts():
    fake = FakeLLM(fault_rate=1.0, errors=[server_error])
    retry = {"base_delay": 0.001, "max_delay": 0.002}  # a mapping, as in a config file
    provider = wrap_provider(fake, cache=False, retry=retry, max_attempts=3)
    with pytest.raises(ProviderServerError):
        await provider.complete(req())
    assert fake.calls == 3 and provider.retry_stats.failures == 1


@pytest.mark.parametrize("error", [ProviderAuthError, ProviderBadRequestError])
async def test_non_retryable_errors_fail_at_once(error):
    fake = FakeLLM(fault_rate=1.0, errors=[lambda model: error("no", model=model)])
    provider = wrap_provider(fake, cache=False, retry=RetryPolicy(6, 1.0, 5.0))
    start = time.perf_counter()
    with pytest.raises(error):
        await provider.complete(req())
    assert time.perf_counter() - start < 0.5 and fake.calls == 1


# --- spend cap, accounting ------------------------------------------------------------------------


async def test_spend_cap_stops_new_calls_at_the_cap():
    fake = FakeLLM(price=0.01)
    provider = wrap_provider(fake, cache=False, spend_cap_usd=0.055, retry=FAST)
    done = refused = 0
    for i in range(20):
        try:
            await provider.complete(req(f"q{i}"))
            done += 1
        except SpendCapReached as error:
            refused += 1
            assert "spend cap" in str(error)
    assert done == 6 and refused == 14  # the 6th call crosses the cap; nothing starts after it
    assert fake.calls == 6 and provider.ledger.spent_usd == pytest.approx(0.06)
    assert provider.retry_stats.retries == 0  # the cap is never retried


async def test_spend_cap_shared_by_concurrent_callers():
    ledger = Ledger(spend_cap_usd=0.01)
    a = wrap_provider(FakeLLM("a", price=1e-3), cache=False, ledger=ledger, max_concurrency=4)
    b = wrap_provider(FakeLLM("b", price=2e-3), cache=False, ledger=ledger, max_concurrency=4)
    results = await asyncio.gather(
        *(p.complete(req(f"q{i}")) for i in range(100) for p in (a, b)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, SpendCapReached)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert refused and ok and len(refused) + len(ok) == 200
    assert ledger.spent_usd <= 0.01 + 8 * 2e-3  # at most the calls in flight overshoot
    assert ledger.by_model().keys() == {"a", "b"}


def test_a_shared_ledger_keeps_one_cap():
    ledger = Ledger(spend_cap_usd=1.0)
    wrap_provider(FakeLLM(), cache=False, ledger=ledger, spend_cap_usd=1.0)
    with pytest.raises(ValueError, match="differs"):
        wrap_provider(FakeLLM(), cache=False, ledger=ledger, spend_cap_usd=2.0)


async def test_usage_is_aggregated_by_latent_method_and_tags():
    provider = wrap_provider(FakeLLM(), cache=False)

    async def call(latent: str, method: str, text: str) -> None:
        current_latent.set(latent)  # as the pipeline does, in each method's task
        current_method.set(method)
        await provider.complete(req(text))

    with usage_tags(run="r1"):
        await asyncio.gather(
            call("a", "maxact", "explain a"),
            call("b", "maxact", "explain b"),
            call("a", "maxact/detection", "score a"),
        )
    ledger = provider.ledger
    assert ledger.by("latent")["a"].calls == 2 and ledger.by("latent")["b"].calls == 1
    assert ledger.by("method")["maxact"].calls == 2
    assert ledger.where(latent="a", method="maxact/detection").calls == 1
    assert ledger.by("run")["r1"] == ledger.total == provider.usage
    assert ledger.total.cost_usd == pytest.approx(3e-4)


# --- cache ----------------------------------------------------------------------------------------


async def test_cache_makes_reruns_free_and_survives_corruption(tmp_path):
    fake = FakeLLM(answer="cached answer")
    provider = wrap_provider(fake, cache=ResponseCache(tmp_path / "c"))
    first = await provider.complete(req())
    again = await wrap_provider(fake, cache=tmp_path / "c").complete(req())
    assert fake.calls == 1
    assert again.text == first.text and again.usage.cost_usd == 0
    assert again.usage.cached_calls == 1 and again.usage.calls == 0
    different = await provider.complete(req(temperature=0.5))
    assert fake.calls == 2 and different.usage.calls == 1
    files = sorted((tmp_path / "c").rglob("*"))
    assert not [f for f in files if ".tmp" in f.name]
    entries = [f for f in files if f.suffix == ".json"]
    assert len(entries) == 2
    for entry in entries:
        entry.write_text(entry.read_text()[:25])  # truncate: corrupt
    fresh = wrap_provider(fake, cache=tmp_path / "c")
    assert (await fresh.complete(req())).usage.calls == 1
    assert fresh.cache.corrupt == 1 and fake.calls == 3
    rewritten = fresh.cache.path(cache_key("fake", "fake-model", req()))
    assert json.loads(rewritten.read_text())["format"] == 1  # the bad entry was replaced whole


async def test_cache_hits_are_accounted_free_and_skip_the_cap(tmp_path):
    fake = FakeLLM(price=0.01)
    ledger = Ledger(spend_cap_usd=0.01)
    provider = wrap_provider(fake, cache=tmp_path, ledger=ledger)
    await provider.complete(req())  # reaches the cap
    hit = await provider.complete(req())  # served from the cache: no call, no cap
    assert hit.usage.cached_calls == 1 and fake.calls == 1
    assert [r.cached for r in ledger.records] == [False, True]
    with pytest.raises(SpendCapReached):
        await provider.complete(req("new question"))


async def test_cache_scope_separates_settings_but_ignores_credentials(tmp_path):
    fake = FakeLLM()
    one = wrap_provider(fake, cache=tmp_path, cache_scope={"api_base": "a", "api_key": "k1"})
    await one.complete(req())
    rotated = wrap_provider(fake, cache=tmp_path, cache_scope={"api_base": "a", "api_key": "k2"})
    await rotated.complete(req())
    assert fake.calls == 1  # a new key, same answers
    other = wrap_provider(fake, cache=tmp_path, cache_scope={"api_base": "b", "api_key": "k1"})
    await other.complete(req())
    assert fake.calls == 2


async def test_no_cache_switches(tmp_path, monkeypatch):
    fake = FakeLLM()
    for _ in range(2):
        await wrap_provider(fake, cache=False).complete(req())
    assert fake.calls == 2
    monkeypatch.setenv("SAEXPLAIN_NO_CACHE", "1")
    for _ in range(2):
        await wrap_provider(fake, cache=tmp_path).complete(req())
    assert fake.calls == 4 and not list(tmp_path.rglob("*.json"))


def test_default_cache_dir_needs_only_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "responses"
    monkeypatch.delenv("SAEXPLAIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "saexplain" / "responses"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "saexplain" / "responses"


# --- limits ---------------------------------------------------------------------------------------


async def test_concurrency_limit_bounds_calls_in_flight():
    fake = FakeLLM(delay=0.02)
    provider = wrap_provider(fake, cache=False, max_concurrency=3)
    await asyncio.gather(*(provider.complete(req(f"{i}")) for i in range(12)))
    assert fake.peak == 3 and provider.limit.peak == 3


async def test_per_model_rate_limit_spaces_calls():
    provider = wrap_provider(FakeLLM("rate-limited-model"), cache=False, requests_per_minute=600)
    start = time.perf_counter()
    await asyncio.gather(*(provider.complete(req(f"{i}")) for i in range(5)))
    assert time.perf_counter() - start >= 0.39  # 4 intervals of 0.1 s


# --- the wrapped provider -------------------------------------------------------------------------


async def test_error_messages_are_redacted_and_unchained(caplog):
    caplog.set_level(logging.DEBUG)

    def leaky(model: str) -> ProviderServerError:
        try:
            raise RuntimeError(f"upstream echoed {SECRET}")
        except RuntimeError as cause:
            error = ProviderServerError(f"server said {SECRET}", model=model)
            error.__cause__ = cause
            return error

    provider = wrap_provider(
        FakeLLM(fault_rate=1.0, errors=[leaky]), cache=False, retry=RetryPolicy(2, 0.001, 0.001)
    )
    with pytest.raises(ProviderServerError) as info:
        await provider.complete(req())
    for text in (str(info.value), repr(info.value), caplog.text):
        assert SECRET not in text
    assert "***" in str(info.value) and info.value.__cause__ is None


async def test_optional_provider_methods_reach_through_every_layer():
    class Priced(FakeLLM):
        def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
            return 0.5

        def check_ready(self) -> None:
            raise ProviderAuthError("set FAKE_API_KEY")

    provider = wrap_provider(Priced(), cache=False)
    assert isinstance(provider, Provider)
    assert provider.name == "fake" and provider.model == "fake-model"
    assert provider.estimate_cost(1, 1) == 0.5
    with pytest.raises(ProviderAuthError, match="FAKE_API_KEY"):
        provider.check_ready()
    assert isinstance(provider.innermost, Priced)
    assert not hasattr(wrap_provider(FakeLLM(), cache=False), "estimate_cost")


def test_split_settings_keeps_middleware_and_run_settings_from_the_factory():
    middleware, own = split_settings(
        {"cache": False, "max_attempts": 2, "requests_per_minute": 60, "api_base": "http://x"}
    )
    assert middleware == {"cache": False, "max_attempts": 2, "requests_per_minute": 60}
    assert own == {"api_base": "http://x"}
    for key in ("spend_cap_usd", "ledger"):
        with pytest.raises(ConfigError, match="spend_cap_usd"):
            split_settings({key: 1.0})
