"""Provider limits and money that hold across every worker of a Ray run.

One `Budget` actor holds the run's spend (the driver's ledger total at the start, the cap), the
concurrency slots and the rate budget of each model. Each worker wraps its providers' innermost
provider in a `GlobalBudgetLayer`, which asks the actor before every attempt and reports the
attempt after it: the same check, at the same place, as the in-process `SpendCapLayer` and
`LimitLayer`, but one for the whole cluster instead of one per process.

The actor is also the one record of what was paid: each answered attempt is reported with its
usage and tags under the Ray task (batch of calls) it belongs to, and the driver takes a task's
charges (`settle`) once the task has returned, and whatever is left at the end (`settle_all`), into
the run's one `Ledger` (its `spend.json`). A call a worker paid for and then died before returning
is so still counted, and counted once. What the actor never sees, the worker's `TaskLedger` hands
back with the method's result: answers from the response cache (free) and failed calls.
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

# The Ray task (one batch of method calls, named by the driver) a worker's call belongs to.
current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "saexplain_ray_task", default=None
)


def from_cache(usage: Usage) -> bool:
    """Whether a call with this usage was answered from the response cache (`AccountingLayer`'s
    own test): such calls never reach the `Budget`, so the worker forwards them instead."""
    return usage.cached_calls > 0 and usage.calls == 0


__all__ = [
    "Budget",
    "Forwarded",
    "GlobalBudgetLayer",
    "ModelLimits",
    "TaskLedger",
    "collecting",
    "current_task",
    "from_cache",
]


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
        self.charges: dict[str, list[Forwarded]] = {}  # by task, until the driver settles it
        self.holding: dict[str, list[str]] = {}  # models of the attempts under way, by task
        self.settled = 0

    def _refusal(self) -> str | None:
        if self.cap is None or self.spent < self.cap:
            return None
        self.refused += 1
        return (
            f"spend cap of ${self.cap:.4f} reached (spent ${self.spent:.4f} over every worker); "
            f"no new LLM calls are made: rerun with a higher cap to finish, e.g. "
            f"spend_cap_usd={2 * self.cap:g}"
        )

    async def acquire(self, model: str, task: str | None = None) -> str | None:
        """Wait for `model`'s slot and rate budget; refuse once the cap is reached (checked
        before waiting and again right before the attempt starts, as `SpendCapLayer` does).
        `task`: the Ray task the attempt belongs to."""
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
        self.holding.setdefault(task or "", []).append(model)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return None

    async def release(
        self, model: str, charge: Forwarded | None = None, task: str | None = None
    ) -> None:
        """An attempt `acquire` let start has ended: answered (`charge`, its usage and tags,
        kept under `task` until the driver settles it) or failed (None)."""
        self._end(model)
        held = self.holding.get(task or "")
        if held and model in held:
            held.remove(model)
        if charge is None:
            return
        self.spent += charge.usage.cost_usd
        if not charge.cached:  # a cache-like answer is the worker's to forward (`TaskLedger`)
            self.charges.setdefault(task or "", []).append(charge)

    def _end(self, model: str) -> None:
        self.in_flight -= 1
        slot = self.slots.get(model)
        if slot is not None:
            slot.release()

    async def settle(self, task: str) -> list[Forwarded]:
        """The charges of `task`, every attempt at it (a dead worker's included), handed over
        once: the driver records them in the run's ledger after the task returned. An attempt
        of the task still holding a slot then died with its worker: its slot is freed."""
        for model in self.holding.pop(task, []):
            self._end(model)
        out = self.charges.pop(task, [])
        self.settled += len(out)
        return out

    async def settle_all(self) -> list[Forwarded]:
        """Every charge not settled yet (the end of a run: tasks that never returned)."""
        out = [c for charges in self.charges.values() for c in charges]
        self.charges.clear()
        self.settled += len(out)
        return out

    async def state(self) -> dict[str, Any]:
        """What the budget saw: money, attempts, refusals, the most attempts at once."""
        return {
            "spent_usd": self.spent,
            "calls": self.calls,
            "refused": self.refused,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "settled": self.settled,
        }


class GlobalBudgetLayer(ProviderLayer):
    """Innermost layer of a worker's provider: every attempt asks the `Budget` actor first
    (`budget` is its handle) and reports the answered attempt (usage, tags, task) after."""

    def __init__(self, inner: Provider, budget: Any) -> None:
        super().__init__(inner)
        self.budget = budget

    async def complete(self, request: ChatRequest) -> ChatResponse:
        task = current_task.get()
        refused = await self.budget.acquire.remote(self.model, task)
        if refused is not None:
            raise SpendCapReached(refused, model=self.model)
        charge: Forwarded | None = None
        try:
            response = await self.inner.complete(request)
            usage = response.usage
            tags = tuple(sorted(current_tags().items()))
            charge = Forwarded(self.name, self.model, usage, tags, from_cache(usage))
            return response
        finally:
            await self.budget.release.remote(self.model, charge, task)


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
    """A worker's ledger: keeps nothing. The `Budget` actor holds each paid call (so a call
    survives its worker's death); this hands the rest, answers from the response cache and
    failed calls, to the current task's sink, back to the driver with the method's result. The
    cap is the `Budget` actor's, so this one has none."""

    def __init__(self) -> None:
        super().__init__(None)

    def keep(self, rec: CallRecord) -> None:
        sink = _sink.get()
        if sink is not None and from_cache(rec.usage):  # the same test as `GlobalBudgetLayer`
            sink.append(Forwarded(rec.provider, rec.model, rec.usage, rec.tags, rec.cached))

    def keep_error(self, error_type: str) -> None:
        sink = _sink.get()
        if sink is not None:
            sink.append(Forwarded(error=error_type))
