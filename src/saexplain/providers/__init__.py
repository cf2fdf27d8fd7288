"""LLM providers in the core: the middleware every provider gets, and building a run's providers.

A provider implements one attempt (`name`, `model`, `capabilities`, `async complete(request)`,
raising `saexplain.errors.ProviderError`s); `wrap_provider` adds retries with backoff, the
response cache, rate and concurrency limits, the spend cap and accounting, each in one layer
(`saexplain.providers.layers`). The pipeline wraps every provider it builds
(`saexplain.providers.build`), with one `Ledger` per run. Only the standard library and the core
are used here.
"""

from saexplain.providers.accounting import (
    CallRecord,
    Ledger,
    current_latent,
    current_method,
    current_tags,
    usage_tags,
)
from saexplain.providers.cache import ResponseCache, cache_key, default_cache_dir
from saexplain.providers.layers import (
    AccountingLayer,
    CacheLayer,
    LimitLayer,
    LoggedProvider,
    ProviderLayer,
    RedactErrorsLayer,
    RetryLayer,
    SpendCapLayer,
)
from saexplain.providers.limits import ConcurrencyLimit, RateLimit
from saexplain.providers.retry import RetryPolicy, RetryStats, with_retries
from saexplain.providers.wrap import (
    MIDDLEWARE_SETTINGS,
    account_provider,
    split_settings,
    wrap_provider,
)

__all__ = [
    "MIDDLEWARE_SETTINGS",
    "AccountingLayer",
    "CacheLayer",
    "CallRecord",
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
    "current_latent",
    "current_method",
    "current_tags",
    "default_cache_dir",
    "split_settings",
    "usage_tags",
    "with_retries",
    "wrap_provider",
]
