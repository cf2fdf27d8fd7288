"""Provider limits that hold across every worker of a Ray run.

One `Budget` actor holds the run's spend (the driver's ledger total at the start, the cap), the
concurrency slots and the rate budget of each model. Each worker wraps its providers' innermost
provider in a `GlobalBudgetLayer`, which asks the actor before every attempt and reports the
attempt's cost after it: the same check, at the same place, as the in-process `SpendCapLayer`
and `LimitLayer`, but one for the whole cluster instead of one per process.

The worker's accounting (`TaskLedger`) keeps nothing: each call's usage travels back with the
method's result, and the driver records it in the run's one `Ledger` (its `spend.json`).
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import Any

from saexplain.errors import SpendCapReached
from saexplain.models import ChatRequest, ChatResponse, Usage
from saexplain.protocols import Provider
from saexplain.providers import CallRecord, Ledger, ProviderLayer, RateLimit, current_tags

__all__ = ["Budget", "Forwarded", "GlobalBudgetLayer", "ModelLimits", "TaskLedger", "collecting"]


@dataclass(frozen=True)
class ModelLimits:
    """One model's limits over the whole cluster (a `ProviderSpec`'s middleware settings)."""

    max_concurrency: int | None = None
    requests_per_minute: float | None = None


class Budget:
    """The run's spend, cap, slots and rate budget (decorated as an async Ray actor by the
    executor). `acquire` answers None (go) or the cap's message (refused)."""

    def __init__(
        self, spend_cap_usd: float | None, spent_usd: float, limits: dict[str, ModelLimits]
    ) -> None:
        self.cap = spend_cap_usd
        self.spent = spent_usd
        self.slots = {
            m: asyncio.Semaphore(lim.max_concurrency)
            for m, lim in limits.items()
            if lim.max_concurrency
        }
        self.rates = {
            m: RateLimit(lim.requests_per_minute)
            for m, lim in limits.items()
            if lim.requests_per_minute
        }
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.refused = 0

    def _refusal(self) -> str | None:
        if self.cap is None or self.spent < self.cap:
            return None
        self.refused += 1
        return (
            f"spend cap of ${self.cap:.4f} reached (spent ${self.spent:.4f} over every worker); "
            f"no new LLM calls are made: rerun with a higher cap to finish, e.g. "
            f"spend_cap_usd={2 * self.cap:g}"
        )

    async def acquire(self, model: str) -> str | None:
        """Wait for `model`'s slot and rate budget; refuse once the cap is reached (checked
        before waiting and again right before the attempt starts, as `SpendCapLayer` does)."""
        refused = self._refusal()
        if refused is not None:
            return refused
        slot = self.slots.get(model)
        if slot is not None:
            await slot.acquire()
        rate = self.rates.get(model)
        if rate is not None:
            await rate.wait()
        refused = self._refusal()
        if refused is not None:
            if slot is not None:
                slot.release()
            return refused
        self.in_flight += 1
        self.calls += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return None

    async def release(self, model: str, cost_usd: float) -> None:
        """An attempt `acquire` let start has ended, costing `cost_usd`."""
        self.spent += cost_usd
        self.in_flight -= 1
        slot = self.slots.get(model)
        if slot is not None:
            slot.release()

    async def state(self) -> dict[str, Any]:
        """What the budget saw: money, attempts, refusals, the most attempts at once."""
        return {
            "spent_usd": self.spent,
            "calls": self.calls,
            "refused": self.refused,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


class GlobalBudgetLayer(ProviderLayer):
    """Innermost layer of a worker's provider: every attempt asks the `Budget` actor first
    (`budget` is its handle) and reports its cost after."""

    def __init__(self, inner: Provider, budget: Any) -> None:
        super().__init__(inner)
        self.budget = budget

    async def complete(self, request: ChatRequest) -> ChatResponse:
        refused = await self.budget.acquire.remote(self.model)
        if refused is not None:
            raise SpendCapReached(refused, model=self.model)
        cost = 0.0
        try:
            response = await self.inner.complete(request)
            cost = response.usage.cost_usd
            return response
        finally:
            await self.budget.release.remote(self.model, cost)


@dataclass(frozen=True)
class Forwarded:
    """A call's usage (or a failed call's error type) for the driver's ledger."""

    provider: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    tags: tuple[tuple[str, str], ...] = ()
    cached: bool = False
    error: str | None = None  # the error type of a failed call


_sink: contextvars.ContextVar[list[Forwarded] | None] = contextvars.ContextVar(
    "saexplain_ray_sink", default=None
)


def collecting() -> list[Forwarded]:
    """Start collecting this task's calls (each actor call runs in its own asyncio task, so
    concurrent calls never mix)."""
    sink: list[Forwarded] = []
    _sink.set(sink)
    return sink


class TaskLedger(Ledger):
    """A worker's ledger: keeps nothing, hands each call to the current task's sink; the cap is
    the `Budget` actor's, so this one has none."""

    def __init__(self) -> None:
        super().__init__(None)

    def record(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tags: Any = None,
        *,
        cached: bool = False,
    ) -> CallRecord:
        rec = CallRecord(
            provider=provider,
            model=model,
            usage=usage,
            tags=tuple(sorted((tags if tags is not None else current_tags()).items())),
            cached=cached,
        )
        sink = _sink.get()
        if sink is not None:
            sink.append(Forwarded(provider, model, usage, rec.tags, cached))
        return rec

    def record_error(self, error: BaseException) -> None:
        sink = _sink.get()
        if sink is not None and not isinstance(error, SpendCapReached):
            sink.append(Forwarded(error=type(error).__name__))
