"""Retries with exponential backoff and full jitter, for retryable provider errors only.

Only `ProviderError`s whose `retryable` flag is set (rate limits, server errors, timeouts) are
retried; authentication and bad-request errors, the spend cap and any other exception propagate
at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from saexplain.errors import ProviderError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry (`max_attempts` counts the first try).

    Attempt `k` (0-based) that fails waits `uniform(0, min(max_delay, base_delay * 2**k))`
    ("full jitter"), or the server's `Retry-After` if it asked for longer (capped by max_delay).
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be non-negative")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2.0**attempt))
        wait = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


@dataclass
class RetryStats:
    """Counters a provider keeps across calls (read them in tests and reports)."""

    attempts: int = 0
    retries: int = 0
    failures: int = 0  # calls that gave up (non-retryable, or retries exhausted)
    by_error: dict[str, int] = field(default_factory=dict)

    def count(self, error: BaseException) -> None:
        """Count one failed attempt by its error type."""
        name = type(error).__name__
        self.by_error[name] = self.by_error.get(name, 0) + 1


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    stats: RetryStats | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await `call()` until it succeeds, retrying retryable `ProviderError`s per `policy`."""
    stats = stats if stats is not None else RetryStats()
    rng = rng or random.Random()
    for attempt in range(policy.max_attempts):
        stats.attempts += 1
        try:
            return await call()
        except ProviderError as error:
            stats.count(error)
            if not error.retryable or attempt + 1 >= policy.max_attempts:
                stats.failures += 1
                raise
            wait = policy.delay(attempt, rng, getattr(error, "retry_after", None))
            stats.retries += 1
            log.info(
                "retrying after %s (attempt %d/%d, waiting %.2fs)",
                type(error).__name__,
                attempt + 1,
                policy.max_attempts,
                wait,
            )
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
