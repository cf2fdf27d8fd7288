"""The `ray` executor: a run's explain-and-score stage with every method call on a Ray worker.

The driver (the process running `saexplain run` or `sx.explain`) keeps everything but the calls:
`saexplain.pipeline.explain_and_score` decides the pending (latent, method) pairs (so resume skips
done pairs before anything is submitted), runs the phases, and is the single writer of
`explanations.jsonl` and `scores.jsonl`. Each call goes to the least busy of `workers`
`MethodWorker` actors, which built the run's methods once; its result comes back and is written
then. A worker that dies is restarted by Ray and its unfinished calls are retried there
(`max_restarts`), so nothing is lost, and since only returned results are written, nothing is
written twice. Provider limits and the spend cap are one `Budget` actor's; each call's usage
comes back with its result into the run's one ledger (`spend.json`) and the progress bar.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saexplain.errors import ConfigError, SpendCapReached
from saexplain.models import Explanation, LatentRecord, Score
from saexplain.pipeline import Prepared, explain_and_score
from saexplain.protocols import Provider, needs_of
from saexplain.providers import Ledger, ProviderLayer, RetryLayer, run_ledger
from saexplain_ray.budget import Budget, ModelLimits
from saexplain_ray.worker import MethodWorker, Outcome, ProviderPlan, WorkerPayload

__all__ = ["RayCalls", "RayExecutor", "RaySettings"]

log = logging.getLogger("saexplain.ray")


class RaySettings(BaseModel):
    """The `ray` executor's settings (`executor: {name: ray, ...}`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "local": start a Ray cluster in this process (stopped at the end); "auto": join the
    # running cluster (`ray start --head`); anything else: a Ray address ("ray://host:10001")
    address: Literal["local", "auto"] | str = "local"
    workers: int = Field(default=2, ge=1)  # MethodWorker actors (one process each)
    num_cpus: int | None = Field(default=None, ge=1)  # a local cluster's CPUs (None: all)
    cpus_per_worker: float = Field(default=1.0, ge=0.0)
    max_restarts: int = Field(default=3, ge=-1)  # per worker; -1: without limit

    @classmethod
    def parse(cls, settings: dict[str, Any]) -> RaySettings:
        try:
            return cls.model_validate(settings)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"executor 'ray': {problems}") from None


class _RemoteError(Exception):
    """A method's exception on a worker, re-raised here under the same type name."""


def _raise(error: tuple[str, str]) -> None:
    name, message = error
    if name == SpendCapReached.__name__:
        raise SpendCapReached(message)
    # the same type name as in-process, so result lines read alike on both executors
    raise type(name, (_RemoteError,), {})(message)


class RayCalls:
    """`MethodCalls` over Ray actors: each call goes to the worker with the fewest calls in
    flight; what it paid for is recorded in the driver's `ledger` as it returns."""

    def __init__(self, workers: Sequence[Any], ledger: Ledger | None) -> None:
        self.workers = list(workers)
        self.busy = [0] * len(self.workers)
        self.ledger = ledger

    async def _call(self, method: str, *args: Any) -> Any:
        i = min(range(len(self.workers)), key=self.busy.__getitem__)
        self.busy[i] += 1
        try:
            outcome: Outcome = await getattr(self.workers[i], method).remote(*args)
        finally:
            self.busy[i] -= 1
        if self.ledger is not None:
            for call in outcome.calls:
                if call.error is not None:
                    self.ledger.record_error(type(call.error, (Exception,), {})())
                else:
                    tags = dict(call.tags)
                    self.ledger.record(
                        call.provider, call.model, call.usage, tags, cached=call.cached
                    )
        if outcome.error is not None:
            _raise(outcome.error)
        return outcome.result

    async def explain(self, name: str, record: LatentRecord) -> Explanation:
        result: Explanation = await self._call("explain", name, record)
        return result

    async def score(self, name: str, record: LatentRecord, explanation: Explanation) -> Score:
        result: Score = await self._call("score", name, record, explanation)
        return result


def _spec_built(provider: Provider) -> bool:
    """Whether the run built this provider from a `ProviderSpec` (it has the retry layer that
    `wrap_provider` adds and `account_provider`, for objects passed in, does not)."""
    layer: Any = provider
    while isinstance(layer, ProviderLayer):
        if isinstance(layer, RetryLayer):
            return True
        layer = layer.inner
    return False


def provider_plans(p: Prepared) -> tuple[dict[str, ProviderPlan], dict[str, ModelLimits]]:
    """How the workers rebuild the run's providers, and each model's cluster-wide limits."""
    cfg = p.config
    specs = {"explainer": cfg.explainer_model, "scorer": cfg.scorer_model or cfg.explainer_model}
    plans: dict[str, ProviderPlan] = {}
    limits: dict[str, ModelLimits] = {}
    for role, provider in p.providers.items():
        raw = provider.innermost if isinstance(provider, ProviderLayer) else provider
        spec = specs.get(role) if _spec_built(provider) else None
        if spec is not None and spec.batch is not None:
            raise ConfigError(
                "executor 'ray' does not send provider batches yet: drop `batch` from the "
                "provider, or run in-process (no `executor`)"
            )
        plans[role] = ProviderPlan(raw=raw, spec=spec)
        if spec is not None:
            rpm = spec.settings.get("requests_per_minute")
            conc = spec.settings.get("max_concurrency")
            limits[raw.model] = ModelLimits(
                max_concurrency=int(conc) if isinstance(conc, int | float) else None,
                requests_per_minute=float(rpm) if isinstance(rpm, int | float) else None,
            )
    return plans, limits


def worker_payload(p: Prepared, store: object) -> WorkerPayload:
    """What each worker is built from: the backend and coders only when a method needs them."""
    methods = [*p.explainers.values(), *p.scorers.values()]
    store_path = getattr(store, "path", None)
    return WorkerPayload(
        config=p.config,
        explainers=dict(p.explainers),
        scorers=dict(p.scorers),
        providers=provider_plans(p)[0],
        backend=p.backend if any(needs_of(m).backend for m in methods) else None,
        coders=list(p.coders) if any(needs_of(m).coder for m in methods) else [],
        store_path=None if store_path is None else str(store_path),
        work_dir=str(p.run_dir.path / "cache"),
    )


@dataclass
class RayExecutor:
    """`Executor` `ray`: see the module docstring; `settings` are `RaySettings`."""

    settings: RaySettings
    # after a run: what the budget actor saw (spend, attempts, refusals, most in flight)
    last_budget: dict[str, Any] | None = None

    def _connect(self) -> bool:
        """Connect to Ray (unless this process already is); whether this call started it."""
        import ray

        if ray.is_initialized():
            return False
        s = self.settings
        if s.address == "local":
            ray.init(num_cpus=s.num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=s.address, log_to_driver=False)
        return True

    async def explain_and_score(
        self, p: Prepared, records: Sequence[LatentRecord], store: object, *, progress: bool
    ) -> None:
        import ray

        if p.config.log_prompts:
            raise ConfigError(
                "executor 'ray' does not write prompt logs (log_prompts) yet: run in-process"
            )
        limits = provider_plans(p)[1]  # checks the providers before starting anything
        payload = worker_payload(p, store)
        started = self._connect()
        s = self.settings
        ledger = run_ledger(p.providers)
        budget_cls = ray.remote(num_cpus=0)(Budget)
        worker_cls = ray.remote(MethodWorker)
        budget = budget_cls.remote(
            None if ledger is None else ledger.spend_cap_usd,
            0.0 if ledger is None else ledger.spent_usd,
            limits,
        )
        workers = [
            worker_cls.options(
                num_cpus=s.cpus_per_worker,
                max_restarts=s.max_restarts,
                max_task_retries=s.max_restarts,
                max_concurrency=max(p.config.concurrency, 1),
            ).remote(payload, budget)
            for _ in range(s.workers)
        ]
        log.info("ray: %d workers (%s)", len(workers), s.address)
        try:
            await explain_and_score(
                p, records, store, progress=progress, calls=RayCalls(workers, ledger)
            )
            self.last_budget = await budget.state.remote()
        finally:
            for actor in [*workers, budget]:
                ray.kill(actor)
            if started:
                await asyncio.to_thread(ray.shutdown)
