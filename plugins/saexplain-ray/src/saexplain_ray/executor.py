"""The `ray` executor: a run's explain-and-score stage with the method calls on Ray workers.

The driver (the process running `saexplain run` or `sx.explain`) keeps everything but the calls:
`saexplain.pipeline.explain_and_score` decides the pending (latent, method) pairs (so resume skips
done pairs before anything is submitted), runs the phases, and is the single writer of
`explanations.jsonl`, `scores.jsonl` and the prompt logs. `RayCalls` gathers the calls it is
asked for into Ray tasks of up to `latents_per_task` calls (one per latent and method), so Ray's
per-task overhead is paid per batch, and sends each to the least busy of `workers`
`MethodWorker` actors, which built the run's methods once and run a task's calls concurrently;
each result is written when its task returns. A worker that dies is restarted by Ray and its
unfinished tasks are retried there (`max_restarts`), so nothing is lost, and since only returned
results are written, nothing is written twice. Provider limits, the spend cap and the record of
every paid call are one `Budget` actor's: the driver moves a task's charges into the run's one
ledger (`spend.json`) when the task returns, and what is left at the end, so a call paid for by a
worker that died is counted once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saexplain.errors import ConfigError, SpendCapReached
from saexplain.models import Explanation, LatentRecord, Score
from saexplain.pipeline import Prepared, explain_and_score
from saexplain.protocols import Provider, needs_of
from saexplain.providers import Ledger, ProviderLayer, RetryLayer, run_ledger
from saexplain.rundir import RunDir
from saexplain_ray.budget import Budget, Forwarded, ModelLimits
from saexplain_ray.worker import Call, MethodWorker, Outcome, ProviderPlan, WorkerPayload

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
    # method calls (one per latent and method) per Ray task: Ray's overhead is paid per task
    latents_per_task: int = Field(default=8, ge=1)

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


def record_calls(ledger: Ledger, calls: Sequence[Forwarded]) -> None:
    """Put calls a worker or the `Budget` actor handed back into the run's ledger."""
    for call in calls:
        if call.error is not None:
            ledger.keep_error(call.error)
        else:
            tags = dict(call.tags)
            ledger.record(call.provider, call.model, call.usage, tags, cached=call.cached)


@dataclass
class _Pending:
    call: Call
    future: asyncio.Future[Outcome]


def task_size(latents_per_task: int, concurrency: int, workers: int) -> int:
    """Calls per Ray task: `latents_per_task`, but no more than each worker's share of the run's
    `concurrency`. A task holds its calls' concurrency slots until its slowest call returns, so
    tasks larger than that share leave workers idle (one task of 8 at concurrency 8 runs on one
    of two workers)."""
    return max(1, min(latents_per_task, concurrency // max(workers, 1)))


@dataclass
class RayCalls:
    """`MethodCalls` over Ray actors, in batches: the calls asked for are gathered (until
    `per_task` are waiting, or `linger_s` after the first) into one Ray task, sent to the worker
    with the fewest calls in flight. When a task returns, the driver records what it cost (the
    `Budget` actor's charges of the task, the workers' cache hits and failures), writes its
    prompt-log entries, then hands each call its result."""

    workers: Sequence[Any]
    budget: Any
    ledger: Ledger | None
    per_task: int = 8
    prompt_logs: RunDir | None = None
    linger_s: float = 0.005
    tasks: int = 0  # Ray tasks sent
    _busy: list[int] = field(default_factory=list)
    _queue: list[_Pending] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _sending: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._busy = [0] * len(self.workers)

    async def _call(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        pending = _Pending(call, loop.create_future())
        self._queue.append(pending)
        if len(self._queue) >= self.per_task:
            self._flush()
        elif self._timer is None:
            # the calls freed by one returning task arrive over a few loop turns: wait for them
            self._timer = loop.call_later(self.linger_s, self._flush)
        outcome = await pending.future
        if outcome.error is not None:
            _raise(outcome.error)
        return outcome.result

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        i = min(range(len(self.workers)), key=self._busy.__getitem__)
        self._busy[i] += len(batch)
        self.tasks += 1
        name = uuid.uuid4().hex  # the task's charges are kept under it by the budget
        try:
            outcomes: list[Outcome] = await self.workers[i].run.remote(
                name, [p.call for p in batch]
            )
        except Exception as error:  # the worker is gone for good: each call's error
            await self._settle(name)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        except BaseException:  # cancelled: so are its calls (`drain` settles the charges)
            for p in batch:
                p.future.cancel()
            raise
        finally:
            self._busy[i] -= len(batch)
        await self._settle(name)
        for p, outcome in zip(batch, outcomes, strict=True):
            if self.ledger is not None:
                record_calls(self.ledger, outcome.calls)
            if self.prompt_logs is not None:
                for latent, entry in outcome.prompts:
                    self.prompt_logs.log(latent).append(entry)
            if not p.future.done():
                p.future.set_result(outcome)

    async def _settle(self, name: str) -> None:
        charges: list[Forwarded] = await self.budget.settle.remote(name)
        if self.ledger is not None:
            record_calls(self.ledger, charges)

    async def drain(self) -> None:
        """Wait for the tasks still in flight, then record every charge the budget holds that
        no returned task claimed (calls of tasks that never came back)."""
        self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        charges: list[Forwarded] = await self.budget.settle_all.remote()
        if self.ledger is not None:
            record_calls(self.ledger, charges)
            self.ledger.save()

    async def explain(self, name: str, record: LatentRecord) -> Explanation:
        result: Explanation = await self._call(("explain", name, record, None))
        return result

    async def score(self, name: str, record: LatentRecord, explanation: Explanation) -> Score:
        result: Score = await self._call(("score", name, record, explanation))
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
            # a provider batch gathers many calls into one upload and polls it for hours: the
            # calls would have to come from every worker to one process, which is what an
            # in-process run already is (it only uploads and polls, no worker needed)
            raise ConfigError(
                f"executor 'ray' does not send provider batches ({role} provider {spec.model!r} "
                "has `batch`): a batch run only uploads requests and polls for answers, which "
                "one process does; drop `executor` to send batches in-process, or drop `batch` "
                "to call the provider interactively from the Ray workers"
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
        calls = RayCalls(
            workers,
            budget,
            ledger,
            per_task=task_size(s.latents_per_task, p.config.concurrency, s.workers),
            prompt_logs=p.run_dir if p.config.log_prompts else None,
        )
        try:
            await explain_and_score(p, records, store, progress=progress, calls=calls)
        finally:
            try:  # what every worker paid for is in spend.json, whatever ended the run
                await calls.drain()
                self.last_budget = {**await budget.state.remote(), "tasks": calls.tasks}
            finally:
                for actor in [*workers, budget]:
                    ray.kill(actor)
            if started:
                await asyncio.to_thread(ray.shutdown)
