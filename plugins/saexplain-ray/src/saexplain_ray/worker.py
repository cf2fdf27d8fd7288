"""The worker side of a Ray run: one `MethodWorker` actor per worker process.

A worker is built once from a `WorkerPayload` (the run's config and method objects, the backend
and coders when a method needs them, the store's path, the raw providers) and rebuilt from it
when Ray restarts a dead worker. It runs one method call at a time per request and returns the
result with the calls it paid for; it never writes to the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saexplain.methods import derive_seed
from saexplain.models import Explanation, LatentRecord, ProviderSpec, RunConfig, Score
from saexplain.protocols import Backend, Explainer, MethodContext, Provider, Scorer, SparseCoder
from saexplain.providers import (
    account_provider,
    current_latent,
    current_method,
    split_settings,
    wrap_provider,
)
from saexplain_ray.budget import Forwarded, GlobalBudgetLayer, TaskLedger, collecting

__all__ = ["MethodWorker", "Outcome", "ProviderPlan", "WorkerPayload"]

# Settings the `Budget` actor enforces for the whole cluster instead of each worker's layers.
GLOBAL_SETTINGS = ("requests_per_minute", "max_concurrency")


@dataclass(frozen=True)
class ProviderPlan:
    """How a worker rebuilds one provider: the raw provider and, when the run built it from a
    `ProviderSpec`, that spec (its retries and cache apply again in the worker); None for a
    provider object the caller passed in (used as given, as in-process)."""

    raw: Provider
    spec: ProviderSpec | None


@dataclass
class WorkerPayload:
    config: RunConfig
    explainers: dict[str, Explainer]
    scorers: dict[str, Scorer]
    providers: dict[str, ProviderPlan]  # by role
    backend: Backend | None = None
    coders: list[SparseCoder] = field(default_factory=list)
    store_path: str | None = None
    work_dir: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A method call's result, or its error (type name and message), and the calls it made."""

    result: Explanation | Score | None
    error: tuple[str, str] | None
    calls: list[Forwarded]


def worker_providers(plans: Mapping[str, ProviderPlan], budget: Any) -> dict[str, Provider]:
    """The worker's providers by role: each raw provider inside the `GlobalBudgetLayer`, then
    the run's layers (those of its spec, minus the limits the budget holds), reporting to a
    `TaskLedger`. One raw provider serving two roles stays one provider (one cache)."""
    ledger = TaskLedger()
    out: dict[str, Provider] = {}
    built: dict[int, Provider] = {}
    for role, plan in plans.items():
        if id(plan.raw) not in built:
            inner = GlobalBudgetLayer(plan.raw, budget)
            if plan.spec is None:
                built[id(plan.raw)] = account_provider(inner, ledger)
            else:
                middleware, own = split_settings(plan.spec.settings)
                for key in GLOBAL_SETTINGS:
                    middleware.pop(key, None)
                built[id(plan.raw)] = wrap_provider(
                    inner,
                    ledger=ledger,
                    cache_scope=own,
                    max_concurrency=1 << 20,  # the budget's slots bound the cluster
                    **middleware,
                )
        out[role] = built[id(plan.raw)]
    return out


class MethodWorker:
    """Runs explainers and scorers for the driver (decorated as a Ray actor by the executor)."""

    def __init__(self, payload: WorkerPayload, budget: Any) -> None:
        self.payload = payload
        self.providers = worker_providers(payload.providers, budget)
        self.store: object = None
        if payload.store_path is not None:
            from saexplain.store import ActivationStore

            self.store = ActivationStore(payload.store_path)

    def pid(self) -> int:
        """This worker's process id (the tests kill it)."""
        return os.getpid()

    def _ctx(self, record: LatentRecord) -> MethodContext:
        p = self.payload
        coder = next((c for c in p.coders if c.id == record.latent.coder_id), None)
        return MethodContext(
            backend=p.backend,
            coder=coder,
            providers=self.providers,
            store=self.store,
            seed=derive_seed(p.config.seed, record.latent.key),
            work_dir=Path(p.work_dir) if p.work_dir else None,
        )

    async def explain(self, name: str, record: LatentRecord) -> Outcome:
        calls = collecting()
        current_latent.set(record.latent.key)
        current_method.set(name)
        try:
            result = await self.payload.explainers[name].explain(record, self._ctx(record))
        except Exception as e:  # the driver turns it into the pair's error line
            return Outcome(None, (type(e).__name__, str(e)), calls)
        return Outcome(result, None, calls)

    async def score(self, name: str, record: LatentRecord, explanation: Explanation) -> Outcome:
        calls = collecting()
        current_latent.set(record.latent.key)
        current_method.set(f"{explanation.explainer}/{name}")
        try:
            scorer = self.payload.scorers[name]
            result = await scorer.score(record, explanation, self._ctx(record))
        except Exception as e:
            return Outcome(None, (type(e).__name__, str(e)), calls)
        return Outcome(result, None, calls)
