"""A third-party provider, written as a plain class with only `name`, `model`, `capabilities` and
`complete`, registered through a plugin object, gets the core's middleware in a real run:
retries, the response cache, the spend cap, accounting and redaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline import toy

import saexplain
from saexplain._async import run_sync
from saexplain.api import _provider_spec
from saexplain.errors import (
    ConfigError,
    ProviderRateLimitError,
    ProviderServerError,
    SpendCapReached,
)
from saexplain.hookspecs import Register
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    LatentSelection,
    Message,
    ProviderSpec,
    RunConfig,
    Score,
    Status,
    Usage,
)
from saexplain.plugins import PluginManager
from saexplain.protocols import ProviderCapabilities
from saexplain.providers.build import build_providers
from saexplain.testing import ScriptedProvider, failing_every, fresh_plugin_manager

PRICE = 0.01  # dollars per call
LEAKED = "gsk_THISMUSTNEVERLEAK0123456789"


class ThirdPartyProvider:
    """What a plugin author writes: one attempt per call, typed errors. Its constructor takes
    only its own settings, so a hidden `spend_cap_usd=` or `ledger=` would fail the build.

    The first attempt at every distinct request fails with a transient (retryable) error.
    """

    name = "thirdparty"

    def __init__(self, model: str, *, flaky: bool = True, leak_in_errors: bool = False) -> None:
        self.model = model
        self.capabilities = ProviderCapabilities()
        self.flaky = flaky
        self.leak = leak_in_errors
        self.attempts: list[str] = []  # the prompt of every attempt that reached us
        self.answered = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        first_try = prompt not in self.attempts
        self.attempts.append(prompt)
        if self.leak:
            raise ProviderServerError(f"upstream rejected key {LEAKED}", model=self.model)
        if self.flaky and first_try:
            raise ProviderRateLimitError("slow down", model=self.model)
        self.answered += 1
        return ChatResponse(
            model=self.model,
            choices=(Choice(text=toy.answer(request)),),
            usage=Usage(prompt_tokens=10, completion_tokens=3, cost_usd=PRICE, calls=1),
        )


class ThirdPartyPlugin:
    """The plugin object registering the provider; keeps every instance it builds."""

    def __init__(self) -> None:
        self.built: list[ThirdPartyProvider] = []

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        def make(model: str, **settings: Any) -> ThirdPartyProvider:
            provider = ThirdPartyProvider(model, **settings)
            self.built.append(provider)
            return provider

        register("thirdparty", make, description="a provider written by someone else")


@pytest.fixture
def plugin() -> Iterator[ThirdPartyPlugin]:
    third_party = ThirdPartyPlugin()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(third_party, name="thirdparty-plugin")
        yield third_party


def explain(tmp_path: Path, name: str, provider: Any, **kw: Any) -> Any:
    backend, coder, texts = toy.world()
    return saexplain.explain(
        backend,
        coder,
        latents=list(toy.WORDS),
        explainers=["toy"],
        scorers=["toyscore"],
        provider=provider,
        dataset=texts,
        n_tokens=32 * 200,
        context_length=32,
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        name=name,
        progress=False,
        **kw,
    )


def results_of(run: Path) -> tuple[list[Explanation], list[Score]]:
    lines = [json.loads(x) for x in (run / "explanations.jsonl").read_text().splitlines()]
    scores = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    return (
        [Explanation.model_validate(x) for x in lines],
        [Score.model_validate(x) for x in scores],
    )


FAST_RETRIES = {"retry": {"base_delay": 0.001, "max_delay": 0.002}, "max_attempts": 3}


def test_retries_cache_and_accounting_through_sx_explain(tmp_path, plugin):
    spec = ProviderSpec(provider="thirdparty", model="tp-1", settings=FAST_RETRIES)
    results = explain(tmp_path, "first", spec, spend_cap_usd=100.0)
    (provider,) = plugin.built  # one provider serves both roles
    explanations, scores = results_of(tmp_path / "first")
    # retries: every request failed once and was answered on its second attempt
    assert {e.latent.index: e.text for e in explanations} == {
        i: f"the word {w}" for i, w in toy.WORDS.items()
    }
    assert all(e.status is Status.OK for e in explanations)
    assert all(s.status is Status.OK and s.value == 1.0 for s in scores)
    distinct = set(provider.attempts)
    assert len(provider.attempts) == len(distinct) + provider.answered
    assert provider.answered >= len(distinct) > len(toy.WORDS)
    # accounting: the run's summary shows what the explanations cost
    usage = results.summary()["explainers"]["toy"]["usage"]
    assert usage["calls"] == len(toy.WORDS) and usage["cached_calls"] == 0
    assert usage["cost_usd"] == pytest.approx(PRICE * len(toy.WORDS))

    # the cache: the same run under a new name sends nothing and costs nothing
    again = explain(tmp_path, "second", spec, spend_cap_usd=100.0)
    rerun = plugin.built[-1]
    assert rerun is not provider and rerun.attempts == []
    usage = again.summary()["explainers"]["toy"]["usage"]
    assert usage["calls"] == 0 and usage["cached_calls"] == len(toy.WORDS)
    assert usage["cost_usd"] == 0
    texts = {e.latent.index: e.text for e in results_of(tmp_path / "second")[0]}
    assert texts == {e.latent.index: e.text for e in explanations}


def test_the_spend_cap_stops_calls_and_errors_are_results(tmp_path, plugin):
    spec = ProviderSpec(provider="thirdparty", model="tp-2", settings={"flaky": False})
    explain(tmp_path, "capped", spec, spend_cap_usd=3.5 * PRICE, concurrency=1)
    (provider,) = plugin.built
    assert provider.answered == len(provider.attempts) == 4  # the 4th call crosses the cap
    explanations, scores = results_of(tmp_path / "capped")
    errors = [r for r in [*explanations, *scores] if r.status is Status.ERROR]
    assert errors and any("SpendCapReached" in (r.error or "") for r in errors)
    assert len(explanations) == len(toy.WORDS) and len(scores) == len(toy.WORDS)
    spent = sum(e.usage.cost_usd for e in explanations)
    assert 0 < spent <= 4 * PRICE


def test_provider_strings_name_registered_providers(plugin):
    assert _provider_spec("thirdparty:tp-3") == ProviderSpec(provider="thirdparty", model="tp-3")
    # not a registered name: the whole string is a model of the default provider
    assert _provider_spec("ft:gpt-4o-mini:org::id") == ProviderSpec(model="ft:gpt-4o-mini:org::id")


def test_errors_of_a_third_party_provider_are_redacted_everywhere(tmp_path, plugin):
    spec = ProviderSpec(
        provider="thirdparty", model="tp-4", settings={"leak_in_errors": True, "max_attempts": 1}
    )
    explain(tmp_path, "leaky", spec, log_prompts=True)
    run = tmp_path / "leaky"
    explanations, _ = results_of(run)
    assert all(e.status is Status.ERROR and "***" in (e.error or "") for e in explanations)
    files = [p for p in run.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".html")]
    assert any(p.parent.name == "logs" for p in files)
    for path in files:
        assert LEAKED not in path.read_text(errors="ignore"), path


def test_a_spend_cap_in_provider_settings_is_a_config_error(tmp_path, plugin):
    spec = ProviderSpec(provider="thirdparty", model="tp-5", settings={"spend_cap_usd": 1.0})
    with pytest.raises(ConfigError, match="run config"):
        explain(tmp_path, "misplaced", spec)
    assert plugin.built == []


def _config(tmp_path: Path, **kw: Any) -> RunConfig:
    fields: dict[str, Any] = dict(
        model="fake",
        coder="fake",
        dataset="toy corpus",
        latents=LatentSelection(indices=(1,)),
        output_dir=str(tmp_path),
        explainer_model={"provider": "thirdparty", "model": "tp-6"},
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


def test_given_providers_are_accounted_and_capped_but_not_retried(tmp_path, plugin):
    flaky = ScriptedProvider(toy.answer, fail_on=failing_every(2), cost_per_token=1.0)
    manager: PluginManager = saexplain.get_plugin_manager()
    methods = {"toy": toy.ToyExplainer()}
    built = build_providers(
        _config(tmp_path, spend_cap_usd=5.0),
        manager,
        methods,
        {"toyscore": toy.ToyScorer()},
        {"explainer": flaky, "scorer": flaky},
    )
    assert built["explainer"] is built["scorer"]  # one object, one provider
    assert plugin.built == []  # nothing built when the caller gives the providers
    wrapped = built["explainer"]
    request = ChatRequest(messages=(Message(role="user", content="EXPLAIN <<cat>>"),))
    with pytest.raises(ProviderServerError):
        run_sync(wrapped.complete(request))  # call 0 fails: passed through, no retry
    answer = run_sync(wrapped.complete(request))
    assert answer.text == "the word cat" and len(flaky.requests) == 2
    assert wrapped.ledger.total.calls == 1 and wrapped.ledger.spent_usd >= 5.0
    with pytest.raises(SpendCapReached):
        run_sync(wrapped.complete(request))
    assert len(flaky.requests) == 2


def test_built_providers_of_a_run_share_one_ledger(tmp_path, plugin):
    cfg = _config(tmp_path, scorer_model={"provider": "thirdparty", "model": "tp-7"})
    built = build_providers(
        cfg,
        saexplain.get_plugin_manager(),
        {"toy": toy.ToyExplainer()},
        {"toyscore": toy.ToyScorer()},
    )
    assert [p.model for p in plugin.built] == ["tp-6", "tp-7"]
    assert built["explainer"] is not built["scorer"]
    assert built["explainer"].ledger is built["scorer"].ledger
