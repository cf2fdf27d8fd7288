"""`wrap_provider`: give any provider retries, the response cache, limits, the spend cap and
accounting, by stacking the layers of `saexplain.providers.layers`.

A provider then only implements one attempt: `name`, `model`, `capabilities` and
`async complete(request)`, raising `saexplain.errors.ProviderError`s (retryable ones for rate
limits, server errors and timeouts). The pipeline wraps every provider it builds; in a
`ProviderSpec`, the settings named in `MIDDLEWARE_SETTINGS` go to the layers and the rest to the
provider's factory (`split_settings`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from saexplain.errors import ConfigError
from saexplain.models import BatchOptions
from saexplain.protocols import Provider
from saexplain.providers.accounting import Ledger
from saexplain.providers.batch import make_batch_layer
from saexplain.providers.cache import CacheSetting, make_cache
from saexplain.providers.layers import (
    AccountingLayer,
    CacheLayer,
    CleanLayer,
    LimitLayer,
    ProviderLayer,
    RedactErrorsLayer,
    RetryLayer,
    SpendCapLayer,
)
from saexplain.providers.limits import ConcurrencyLimit, global_limit, rate_limit_for
from saexplain.providers.retry import RetryPolicy

if TYPE_CHECKING:
    from saexplain.rundir import RunDir

log = logging.getLogger("saexplain.providers")

# ProviderSpec settings the core takes for the layers; a factory never sees them.
MIDDLEWARE_SETTINGS = frozenset(
    {"cache", "retry", "max_attempts", "requests_per_minute", "max_concurrency"}
)
# Settings of the run, not of one provider: a factory never sees them either.
RUN_SETTINGS = frozenset({"spend_cap_usd", "ledger"})


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(middleware settings, the provider's own settings)` of a `ProviderSpec`'s settings."""
    misplaced = sorted(RUN_SETTINGS & settings.keys())
    if misplaced:
        raise ConfigError(
            f"{', '.join(misplaced)} cannot be a provider setting: the spend cap covers the whole "
            "run, set `spend_cap_usd` in the run config (or `sx.explain(..., spend_cap_usd=...)`)"
        )
    middleware = {k: v for k, v in settings.items() if k in MIDDLEWARE_SETTINGS}
    own = {k: v for k, v in settings.items() if k not in MIDDLEWARE_SETTINGS}
    return middleware, own


def _retry_policy(
    retry: RetryPolicy | Mapping[str, Any] | None, max_attempts: int | None
) -> RetryPolicy:
    policy = RetryPolicy(**retry) if isinstance(retry, Mapping) else (retry or RetryPolicy())
    if max_attempts is not None:
        policy = RetryPolicy(int(max_attempts), policy.base_delay, policy.max_delay)
    return policy


def _ledger(ledger: Ledger | None, spend_cap_usd: float | None) -> Ledger:
    if ledger is None:
        return Ledger(spend_cap_usd)
    if spend_cap_usd is not None:
        if ledger.spend_cap_usd is None:
            ledger.spend_cap_usd = float(spend_cap_usd)
        elif ledger.spend_cap_usd != spend_cap_usd:
            raise ValueError("spend_cap_usd differs from the shared ledger's cap")
    return ledger


def wrap_provider(
    provider: Provider,
    *,
    cache: CacheSetting = None,
    cache_scope: Mapping[str, Any] | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
    requests_per_minute: float | None = None,
    max_concurrency: int | ConcurrencyLimit | None = None,
    ledger: Ledger | None = None,
    spend_cap_usd: float | None = None,
    seed: int | None = None,
    batch: BatchOptions | Mapping[str, Any] | bool | None = None,
) -> ProviderLayer:
    """`provider` inside every middleware layer. From the outside in:

    1. error messages redacted (no secret in any exception);
    2. accounting: each answer's usage recorded in `ledger` (a new one unless given; share one
       to account and cap several providers together), tagged by latent / method / `usage_tags`,
       and failed calls counted by error type;
    3. the response cache (`cache`: None/True the default directory, False off, a directory or a
       `ResponseCache`; `cache_scope`: settings besides the model that change answers, never
       credentials); a hit costs nothing;
    3b. answers cleaned (`CleanLayer`): lone surrogates replaced (such answers are not cached),
       known secrets masked;
    4. retries with backoff of retryable errors (`retry`: a `RetryPolicy` or its fields as a
       mapping; `max_attempts` overrides its attempts; `seed` fixes the jitter);
    5. the per-model rate limit (`requests_per_minute`) and the concurrency limit
       (`max_concurrency`, default the process-wide limit, `SAEXPLAIN_MAX_CONCURRENCY` or 64);
    6. the spend cap (`spend_cap_usd`, or the given ledger's): checked right before each attempt.

    `batch` (true or `BatchOptions`) adds a `BatchLayer` between 3b and 4: calls go out as
    discounted batches through the provider's `BatchSubmitting` capability
    (`saexplain.providers.batch`); what a batch cannot answer goes through 4-6.
    """
    shared = _ledger(ledger, spend_cap_usd)
    if isinstance(max_concurrency, ConcurrencyLimit):
        concurrency = max_concurrency
    elif max_concurrency is not None:
        concurrency = ConcurrencyLimit(int(max_concurrency))
    else:
        concurrency = global_limit()
    rate = (
        rate_limit_for(provider.model, float(requests_per_minute)) if requests_per_minute else None
    )
    layered: Provider = SpendCapLayer(provider, shared)
    layered = LimitLayer(layered, concurrency=concurrency, rate=rate)
    retrying = RetryLayer(layered, _retry_policy(retry, max_attempts), seed=seed)
    shared.track_retries(retrying.retry_stats)
    layered = CleanLayer(make_batch_layer(retrying, provider, batch, shared, scope=cache_scope))
    response_cache = make_cache(cache)
    if response_cache is not None:
        layered = CacheLayer(layered, response_cache, cache_scope)
    layered = AccountingLayer(layered, shared)
    return RedactErrorsLayer(layered)


def account_provider(provider: Provider, ledger: Ledger) -> ProviderLayer:
    """Only the run-wide layers: redacted errors, accounting in `ledger` and its spend cap.

    The pipeline uses this for provider objects a caller passes in (`providers=`, or
    `sx.explain(provider=obj)`): they are used as built, without retries, cache or limits
    (wrap them with `wrap_provider` first to get those), but the run's cap still covers them.
    """
    return RedactErrorsLayer(AccountingLayer(CleanLayer(SpendCapLayer(provider, ledger)), ledger))


def run_ledger(providers: Mapping[str, Provider]) -> Ledger | None:
    """The `Ledger` the run's wrapped providers share; None when the run has no provider."""
    for provider in providers.values():
        ledger = getattr(provider, "ledger", None) if isinstance(provider, ProviderLayer) else None
        if isinstance(ledger, Ledger):
            return ledger
    return None


async def close_providers(providers: Mapping[str, Provider]) -> None:
    """End of a run: save the run's ledger (its `spend.json`) and close every provider that
    holds connections (`aclose`, e.g. the direct-HTTP session), each once; a failure to close
    is logged, never raised."""
    ledger = run_ledger(providers)
    if ledger is not None:
        ledger.save()
    seen: set[int] = set()
    for provider in providers.values():
        inner = provider.innermost if isinstance(provider, ProviderLayer) else provider
        if id(inner) in seen:
            continue
        seen.add(id(inner))
        aclose = getattr(inner, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except Exception as error:
            log.warning("closing provider %s failed: %s", provider.name, error)


def record_provider_calls(run_dir: RunDir, providers: Mapping[str, Provider]) -> None:
    """Add the run's `Ledger.stats()` (spend, calls, retries, provider errors by type, calls the
    cap refused) to its manifest as `provider_calls`; `summary.json` copies them from there."""
    ledger = run_ledger(providers)
    if ledger is None:
        return
    manifest = run_dir.read_json("manifest") or {}
    run_dir.write_json("manifest", {**manifest, "provider_calls": ledger.stats()})
