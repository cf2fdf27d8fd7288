"""What every saexplain-litellm provider shares: cache, spend cap, limits, retries, accounting.

A subclass implements `_call(request) -> ChatResponse` (one attempt, raising typed
`ProviderError`s); `complete` wraps it in, from the outside in:

1. the response cache (a hit costs nothing and is recorded as a cached call);
2. the spend cap (checked before every attempt: no new call once the cap is reached);
3. the per-model rate limit and the concurrency limit;
4. retries with backoff on retryable errors;
5. accounting of the usage in the ledger, tagged with the active `usage_tags`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from typing import Any

from saexplain.errors import ProviderError
from saexplain.models import ChatRequest, ChatResponse, Usage
from saexplain.protocols import ProviderCapabilities
from saexplain_litellm.accounting import Ledger, current_tags, usage_tags
from saexplain_litellm.cache import ResponseCache, cache_key
from saexplain_litellm.limits import ConcurrencyLimit, RateLimit, global_limit, rate_limit_for
from saexplain_litellm.redact import redact
from saexplain_litellm.retry import RetryPolicy, RetryStats, with_retries

log = logging.getLogger("saexplain_litellm")

CacheSetting = ResponseCache | str | os.PathLike[str] | bool | None


def make_cache(cache: CacheSetting) -> ResponseCache | None:
    """`True`/`None`: the default directory; `False`: no cache; a path or a cache: that one."""
    if cache is False or os.environ.get("SAEXPLAIN_NO_CACHE") == "1":
        return None
    if isinstance(cache, ResponseCache):
        return cache
    if cache is None or cache is True:
        return ResponseCache()
    return ResponseCache(cache)


class BaseProvider:
    """Shared machinery of the providers in this plugin (see the module docstring)."""

    name = "base"

    def __init__(
        self,
        model: str,
        *,
        capabilities: ProviderCapabilities,
        cache: CacheSetting = None,
        ledger: Ledger | None = None,
        spend_cap_usd: float | None = None,
        max_concurrency: int | ConcurrencyLimit | None = None,
        requests_per_minute: float | None = None,
        retry: RetryPolicy | None = None,
        max_attempts: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.capabilities = capabilities
        self.cache = make_cache(cache)
        if ledger is not None and spend_cap_usd is not None:
            if ledger.spend_cap_usd is None:
                ledger.spend_cap_usd = float(spend_cap_usd)
            elif ledger.spend_cap_usd != spend_cap_usd:
                raise ValueError("spend_cap_usd differs from the shared ledger's cap")
        self.ledger = ledger if ledger is not None else Ledger(spend_cap_usd)
        if isinstance(max_concurrency, ConcurrencyLimit):
            self.limit = max_concurrency
        elif max_concurrency is not None:
            self.limit = ConcurrencyLimit(int(max_concurrency))
        else:
            self.limit = global_limit()
        self.rate_limit: RateLimit | None = (
            rate_limit_for(model, float(requests_per_minute)) if requests_per_minute else None
        )
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            policy = RetryPolicy(max_attempts, policy.base_delay, policy.max_delay)
        self.retry_policy = policy
        self.retry_stats = RetryStats()
        self._rng = random.Random(seed)

    # subclasses -----------------------------------------------------------------------------------

    async def _call(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    def cache_params(self) -> Mapping[str, Any]:
        """Settings besides the request that change the answer (never credentials)."""
        return {}

    # public ---------------------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self.ledger.total

    async def complete(
        self, request: ChatRequest, *, tags: Mapping[str, object] | None = None
    ) -> ChatResponse:
        """Answer `request`; `tags` add to the active `usage_tags` for accounting."""
        if tags:
            with usage_tags(**tags):
                return await self._complete(request)
        return await self._complete(request)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        key = None
        if self.cache is not None:
            key = cache_key(self.name, self.model, request, self.cache_params())
            hit = self.cache.get(key)
            if hit is not None:
                usage = Usage(
                    prompt_tokens=hit.usage.prompt_tokens,
                    completion_tokens=hit.usage.completion_tokens,
                    cost_usd=0.0,
                    calls=0,
                    cached_calls=1,
                )
                self.ledger.record(self.name, self.model, usage, current_tags(), cached=True)
                return hit.model_copy(update={"usage": usage})

        async def attempt() -> ChatResponse:
            self.ledger.check_cap(self.model)
            if self.rate_limit is not None:
                await self.rate_limit.wait()
            async with self.limit.slot():
                self.ledger.check_cap(self.model)
                return await self._call(request)

        try:
            response = await with_retries(
                attempt, self.retry_policy, stats=self.retry_stats, rng=self._rng
            )
        except ProviderError as error:
            log.warning("%s call to %s failed: %s", self.name, self.model, redact(str(error)))
            raise
        self.ledger.record(self.name, self.model, response.usage, current_tags())
        if self.cache is not None and key is not None:
            try:
                self.cache.put(key, request, response)
            except OSError as error:  # a full disk must not lose an answer already paid for
                log.warning("could not write the response cache: %s", error)
        return response

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
