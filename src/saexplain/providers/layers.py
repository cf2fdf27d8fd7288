"""The middleware layers: each one a `Provider` that adds one concern around another provider.

`wrap_provider` (in `saexplain.providers.wrap`) stacks them; each layer can also be used alone.
A layer copies `name`, `model` and `capabilities` from the provider it wraps, and any other
attribute it lacks is looked up on the wrapped provider, so a provider's optional methods
(`estimate_cost`, `count_tokens`, `check_ready`, `aclose`, ...) and the state of inner layers
(`retry_stats`, `cache`, `ledger`, ...) stay reachable from the outermost layer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from saexplain.errors import ProviderError, SpendCapReached
from saexplain.models import ChatRequest, ChatResponse, TokenLogprob, Usage
from saexplain.protocols import Provider
from saexplain.providers.accounting import Ledger, current_latent, current_method, current_tags
from saexplain.providers.cache import (
    ResponseCache,
    cache_key,
    cacheable,
    do_not_cache,
    remember_origin,
)
from saexplain.providers.limits import ConcurrencyLimit, RateLimit
from saexplain.providers.retry import RetryPolicy, RetryStats, with_retries
from saexplain.secrets import redact, redact_secrets, redactor

if TYPE_CHECKING:
    from saexplain.rundir import RunDir

log = logging.getLogger("saexplain.providers")


class ProviderLayer:
    """A provider that forwards to `inner`; subclasses add one concern in `complete`."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.capabilities = inner.capabilities

    def __getattr__(self, attr: str) -> Any:
        # Called only for attributes this layer lacks. `inner` itself is excluded so that a
        # half-built layer (copy, pickle) raises AttributeError instead of recursing forever.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    @property
    def innermost(self) -> Provider:
        """The provider under every layer."""
        provider: Provider = self.inner
        while isinstance(provider, ProviderLayer):
            provider = provider.inner
        return provider

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.inner.complete(request)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class RedactErrorsLayer(ProviderLayer):
    """Masks secrets in the message of any exception the wrapped provider raises.

    When something was masked, the exception's chain is cut too: the original exception it was
    raised from most likely carries the same secret.
    """

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            return await self.inner.complete(request)
        except Exception as error:
            scrub(error)
            raise


def scrub(error: BaseException) -> None:
    """Redact the string arguments (hence the message) of `error` in place."""
    cleaned = tuple(redact(a) if isinstance(a, str) else a for a in error.args)
    if cleaned != error.args:
        error.args = cleaned
        error.__cause__ = None
        error.__suppress_context__ = True


# A lone surrogate (what `json.loads` makes of `"\\ud800"`) cannot be written as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_response(response: ChatResponse) -> tuple[ChatResponse, bool]:
    """`(response with its text made safe, whether a lone surrogate had to be replaced)`.

    Lone surrogates in the text, the logprob tokens or the model name become U+FFFD (one
    character for one, so token offsets still line up), and known secrets are masked (a server
    echoing a request header). The response itself is returned when nothing changed.
    """
    mask = redactor()
    repaired = False

    def clean(text: str) -> str:
        nonlocal repaired
        if not text.isascii() and _SURROGATE.search(text):
            repaired = True
            text = _SURROGATE.sub("\ufffd", text)
        return mask(text)

    def clean_token(t: TokenLogprob) -> TokenLogprob:
        token, top = clean(t.token), tuple((clean(a), lp) for a, lp in t.top)
        if token == t.token and top == t.top:
            return t
        return t.model_copy(update={"token": token, "top": top})

    choices = []
    for c in response.choices:
        text = clean(c.text)
        logprobs = None if c.logprobs is None else tuple(clean_token(t) for t in c.logprobs)
        reason = None if c.finish_reason is None else clean(c.finish_reason)
        if text == c.text and logprobs == c.logprobs and reason == c.finish_reason:
            choices.append(c)
        else:
            update = {"text": text, "logprobs": logprobs, "finish_reason": reason}
            choices.append(c.model_copy(update=update))
    model = clean(response.model)
    if model == response.model and all(
        a is b for a, b in zip(choices, response.choices, strict=True)
    ):
        return response, repaired
    return response.model_copy(update={"model": model, "choices": tuple(choices)}), repaired


class CleanLayer(ProviderLayer):
    """Makes every answer safe to write and show (`clean_response`): nothing downstream fails to
    serialise it, and no secret a server echoes reaches results, logs or the cache. It sits
    inside the cache, so the cache stores the clean answer; a repaired answer (the original was
    broken) is marked `do_not_cache`, so a rerun asks again."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response, repaired = clean_response(await self.inner.complete(request))
        if repaired:
            log.warning(
                "%s answer from %s held unencodable characters (replaced by U+FFFD; not cached)",
                self.name,
                self.model,
            )
            do_not_cache(response)
        return response


class AccountingLayer(ProviderLayer):
    """Records the usage of every answered call in `ledger`, tagged with `current_tags()`, and
    counts the calls that failed, by error type (`Ledger.stats`).

    `usage` sums this provider's calls alone (the ledger may be shared by a whole run).
    """

    def __init__(self, inner: Provider, ledger: Ledger) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self.usage = Usage()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            response = await self.inner.complete(request)
        except ProviderError as error:
            self.ledger.record_error(error)
            raise
        usage = response.usage
        cached = usage.cached_calls > 0 and usage.calls == 0
        self.ledger.record(self.name, self.model, usage, current_tags(), cached=cached)
        self.usage = self.usage + usage
        return response


class CacheLayer(ProviderLayer):
    """Answers a request seen before from `cache`, at no cost; stores every new answer that
    serialises and is not marked `do_not_cache`.

    `scope` holds the provider settings besides the model that change answers (part of the key).
    A hit is returned with `cost_usd=0`, `calls=0` and `cached_calls=1`. Each answer handed out
    remembers its entry, so `discard_cached(answer)` can drop it when a method cannot use it.
    """

    def __init__(
        self, inner: Provider, cache: ResponseCache, scope: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(inner)
        self.cache = cache
        self.scope = dict(scope or {})

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = cache_key(self.name, self.model, request, self.scope)
        hit = self.cache.get(key)
        if hit is not None:
            usage = Usage(
                prompt_tokens=hit.usage.prompt_tokens,
                completion_tokens=hit.usage.completion_tokens,
                cached_calls=1,
            )
            served = hit.model_copy(update={"usage": usage})
            remember_origin(served, self.cache, key)
            return served
        response = await self.inner.complete(request)
        if not cacheable(response):
            return response
        try:
            self.cache.put(key, request, response)
        except OSError as error:  # a full disk must not lose an answer already paid for
            log.warning("could not write the response cache: %s", error)
            return response
        except ValueError as error:  # does not serialise (a lone surrogate): never replayed
            log.warning("not caching an answer that does not serialise: %s", error)
            return response
        remember_origin(response, self.cache, key)
        return response


class RetryLayer(ProviderLayer):
    """Retries retryable `ProviderError`s with backoff (see `saexplain.providers.retry`).

    `retry_stats` counts attempts, retries and failures across calls; `seed` fixes the jitter.
    """

    def __init__(
        self,
        inner: Provider,
        policy: RetryPolicy | None = None,
        *,
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self.retry_policy = policy or RetryPolicy()
        self.retry_stats = RetryStats()
        self._rng = random.Random(seed)
        self._sleep = sleep

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            return await with_retries(
                lambda: self.inner.complete(request),
                self.retry_policy,
                stats=self.retry_stats,
                rng=self._rng,
                sleep=self._sleep,
            )
        except SpendCapReached:
            raise  # the ledger warns once, not once per refused call
        except ProviderError as error:
            log.warning("%s call to %s failed: %s", self.name, self.model, redact(str(error)))
            raise


class LimitLayer(ProviderLayer):
    """Waits for a start slot of `rate` (if any), then holds a slot of `concurrency` (if any)."""

    def __init__(
        self,
        inner: Provider,
        *,
        concurrency: ConcurrencyLimit | None = None,
        rate: RateLimit | None = None,
    ) -> None:
        super().__init__(inner)
        self.limit = concurrency
        self.rate_limit = rate

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self.rate_limit is not None:
            await self.rate_limit.wait()
        if self.limit is None:
            return await self.inner.complete(request)
        async with self.limit.slot():
            return await self.inner.complete(request)


class SpendCapLayer(ProviderLayer):
    """Refuses to start a call once `ledger`'s spend cap is reached (`SpendCapReached`).

    It sits inside the limits and the retries, so a call that waited for a slot, and every retry,
    is checked again right before it starts.
    """

    def __init__(self, inner: Provider, ledger: Ledger) -> None:
        super().__init__(inner)
        self.ledger = ledger

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.ledger.check_cap(self.model)
        return await self.inner.complete(request)


class LoggedProvider(ProviderLayer):
    """Writes each prompt and response (or error) to the run's per-latent log, redacted."""

    def __init__(self, inner: Provider, run_dir: RunDir) -> None:
        super().__init__(inner)
        self.run_dir = run_dir

    async def complete(self, request: ChatRequest) -> ChatResponse:
        entry: dict[str, Any] = {
            "method": current_method.get(),
            "provider": self.name,
            "model": self.model,
            "request": redact_secrets(request.model_dump(mode="json")),
        }
        sink = self.run_dir.log(current_latent.get())
        try:
            response = await self.inner.complete(request)
        except Exception as e:
            sink.append({**entry, "error": redact(f"{type(e).__name__}: {e}")})
            raise
        # Not redact_secrets: token logprobs have a `token` key that is no credential.
        sink.append({**entry, "response": response.model_dump(mode="json")})
        return response
