"""LLM providers in the core: the middleware every provider gets, and building a run's providers.

A provider implements one attempt (`name`, `model`, `capabilities`, `async complete(request)`,
raising `saexplain.errors.ProviderError`s); `wrap_provider` adds retries with backoff, answer
cleaning (no lone surrogates, no echoed secrets), the response cache, rate and concurrency
limits, the spend cap and accounting, each in one layer (`saexplain.providers.layers`). A method
that cannot parse an answer drops it from the cache with `discard_cached(response)`. The
pipeline wraps every provider it builds (`saexplain.providers.build`), with one `Ledger` per run,
persisted in the run's `spend.json`. Only the standard library and the core are used here.
"""

from saexplain.providers.accounting import (
    CallRecord,
    Ledger,
    current_latent,
    current_method,
    current_tags,
    load_stats,
    spend_cap_stop,
    usage_tags,
)
from saexplain.providers.cache import ResponseCache, cache_key, default_cache_dir, discard_cached
from saexplain.providers.layers import (
    AccountingLayer,
    CacheLayer,
    CleanLayer,
    LimitLayer,
    LoggedProvider,
    ProviderLayer,
    RedactErrorsLayer,
    RetryLayer,
    SpendCapLayer,
    clean_response,
)
from saexplain.providers.limits import ConcurrencyLimit, RateLimit
from saexplain.providers.retry import RetryPolicy, RetryStats, with_retries
from saexplain.providers.wrap import (
    MIDDLEWARE_SETTINGS,
    account_provider,
    close_providers,
    record_provider_calls,
    run_ledger,
    split_settings,
    wrap_provider,
)

__all__ = [
    "MIDDLEWARE_SETTINGS",
    "AccountingLayer",
    "CacheLayer",
    "CallRecord",
    "CleanLayer",
    "ConcurrencyLimit",
    "Ledger",
    "LimitLayer",
    "LoggedProvider",
    "ProviderLayer",
    "RateLimit",
    "RedactErrorsLayer",
    "ResponseCache",
    "RetryLayer",
    "RetryPolicy",
    "RetryStats",
    "SpendCapLayer",
    "account_provider",
    "cache_key",
    "clean_response",
    "close_providers",
    "current_latent",
    "current_method",
    "current_tags",
    "default_cache_dir",
    "discard_cached",
    "load_stats",
    "record_provider_calls",
    "run_ledger",
    "spend_cap_stop",
    "split_settings",
    "usage_tags",
    "with_retries",
    "wrap_provider",
]
