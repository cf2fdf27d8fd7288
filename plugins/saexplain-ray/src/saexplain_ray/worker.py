"""The worker side of a Ray run: one `MethodWorker` actor per worker process.

A worker is built once from a `WorkerPayload` (the run's config and method objects, the backend
and coders when a method needs them, the store's path, the raw providers) and rebuilt from it
when Ray restarts a dead worker. Each Ray task it runs is a batch of method calls (`run`), run
concurrently; it returns each call's result with what the driver must record: answers from the
response cache, failed calls and, under `log_prompts`, the prompt-log entries (paid calls are
the `Budget` actor's). It never writes to the run directory.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from saexplain.methods import derive_seed
from saexplain.models import Explanation, LatentRecord, ProviderSpec, RunConfig, Score
from saexplain.protocols import Backend, Explainer, MethodContext, Provider, Scorer, SparseCoder
from saexplain.providers import (
    LoggedProvider,
    account_provider,
    current_latent,
    current_method,
    split_settings,
    wrap_provider,
)
from saexplain.rundir import RunDir
from saexplain_ray.budget import (
    Forwarded,
    GlobalBudgetLayer,
    TaskLedger,
    collecting,
    current_task,
)

__all__ = ["Call", "MethodWorker", "Outcome", "PromptEntry", "ProviderPlan", "WorkerPayload"]

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


# One method call of a task: ("explain", name, record, None) or ("score", name, record, explanation)
Call = tuple[str, str, LatentRecord, Explanation | None]
# One prompt-log line for the driver to write: (latent key, entry as `LoggedProvider` writes it)
PromptEntry = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """A method call's result, or its error (type name and message), the calls it made that the
    driver records (cache hits, failures), and its prompt-log entries (under `log_prompts`)."""

    result: Explanation | Score | None
    error: tuple[str, str] | None
    calls: list[Forwarded]
    prompts: list[PromptEntry] = field(default_factory=list)


_prompts: contextvars.ContextVar[list[PromptEntry] | None] = contextvars.ContextVar(
    "saexplain_ray_prompts", default=None
)


class _PromptLogs:
    """Stands in for the run directory in a worker's `LoggedProvider`: its entries go to the
    current call's list, back to the driver, which writes them to the run's prompt logs."""

    class _Sink:
        def __init__(self, latent_key: str) -> None:
            self.latent_key = latent_key

        def append(self, entry: dict[str, Any]) -> None:
            sink = _prompts.get()
            if sink is not None:
                sink.append((self.latent_key, entry))

    def log(self, latent_key: str) -> _PromptLogs._Sink:
        return self._Sink(latent_key)


def worker_providers(
    plans: Mapping[str, ProviderPlan], budget: Any, *, log_prompts: bool = False
) -> dict[str, Provider]:
    """The worker's providers by role: each raw provider inside the `GlobalBudgetLayer`, then
    the run's layers (those of its spec, minus the limits the budget holds), reporting to a
    `TaskLedger`; under `log_prompts`, inside a `LoggedProvider` as in-process. One raw provider
    serving two roles stays one provider (one cache)."""
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
    if log_prompts:  # the same layer, at the same place, as in-process (`explain_and_score`)
        logs = cast(RunDir, _PromptLogs())
        out = {role: LoggedProvider(provider, logs) for role, provider in out.items()}
    return out


class MethodWorker:
    """Runs explainers and scorers for the driver (decorated as a Ray actor by the executor)."""

    def __init__(self, payload: WorkerPayload, budget: Any) -> None:
        self.payload = payload
        self.providers = worker_providers(
            payload.providers, budget, log_prompts=payload.config.log_prompts
        )
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

    async def run(self, task: str, calls: Sequence[Call]) -> list[Outcome]:
        """One Ray task: `calls` concurrently, their outcomes in order. `task` names the batch
        for the `Budget` actor, which keeps what each call paid under it."""
        current_task.set(task)  # copied into each call's asyncio task below
        return list(await asyncio.gather(*(self._one(*call) for call in calls)))

    async def _one(
        self, kind: str, name: str, record: LatentRecord, explanation: Explanation | None
    ) -> Outcome:
        calls = collecting()  # in this call's own asyncio task: concurrent calls never mix
        prompts: list[PromptEntry] = []
        _prompts.set(prompts)
        current_latent.set(record.latent.key)
        try:
            result: Explanation | Score
            if kind == "explain" or explanation is None:
                current_method.set(name)
                result = await self.payload.explainers[name].explain(record, self._ctx(record))
            else:
                current_method.set(f"{explanation.explainer}/{name}")
                scorer = self.payload.scorers[name]
                result = await scorer.score(record, explanation, self._ctx(record))
        except Exception as e:  # the driver turns it into the pair's error line
            return Outcome(None, (type(e).__name__, str(e)), calls, prompts)
        return Outcome(result, None, calls, prompts)
