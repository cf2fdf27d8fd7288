"""Concurrency and rate limits shared across providers.

- `ConcurrencyLimit`: at most `limit` calls in flight. Works from any event loop (one semaphore
  per loop), so a provider used through `run_sync` in a notebook and from async code both work.
  `global_limit()` is the process-wide one every provider uses unless given its own
  (`SAEXPLAIN_MAX_CONCURRENCY`, default 64).
- `RateLimit`: at most `requests_per_minute` call starts per minute, spaced evenly, shared by
  every provider of the same model (`rate_limit_for(model, rpm)`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

DEFAULT_MAX_CONCURRENCY = 64


class ConcurrencyLimit:
    """At most `limit` calls in flight, from any event loop; `peak` is the most seen at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._semaphores.get(loop)
            if sem is None:
                sem = self._semaphores[loop] = asyncio.Semaphore(self.limit)
            return sem

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the duration of the block."""
        async with self._semaphore():
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1


_global: ConcurrencyLimit | None = None
_global_lock = threading.Lock()


def global_limit() -> ConcurrencyLimit:
    """The process-wide concurrency limit (`SAEXPLAIN_MAX_CONCURRENCY`, default 64)."""
    global _global
    with _global_lock:
        if _global is None:
            limit = int(os.environ.get("SAEXPLAIN_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY))
            _global = ConcurrencyLimit(limit)
        return _global


class RateLimit:
    """Evenly spaced call starts: at most `requests_per_minute` per minute."""

    def __init__(self, requests_per_minute: float) -> None:
        if requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive, got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self.interval = 60.0 / requests_per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Claim the next start slot; return how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    async def wait(self) -> None:
        """Sleep until this caller's start slot comes."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_rate_limits: dict[str, RateLimit] = {}


def rate_limit_for(model: str, requests_per_minute: float) -> RateLimit:
    """The shared rate limit of `model` (created on first use; a different rpm replaces it)."""
    with _global_lock:
        limit = _rate_limits.get(model)
        if limit is None or limit.requests_per_minute != requests_per_minute:
            limit = _rate_limits[model] = RateLimit(requests_per_minute)
        return limit
