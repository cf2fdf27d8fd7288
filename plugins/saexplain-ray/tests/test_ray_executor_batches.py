"""`RayCalls` without a cluster: fake actor handles stand in for the workers and the `Budget`
actor, so how calls are gathered into tasks, and how a task's outcome is recorded, is checked
call by call in milliseconds."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

pytest.importorskip("saexplain_ray")

from saexplain_ray.budget import Forwarded
from saexplain_ray.executor import RayCalls, task_size
from saexplain_ray.worker import Outcome

from saexplain.models import Usage
from saexplain.providers import Ledger

PAID = Usage(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, calls=1)
CACHED = Usage(prompt_tokens=10, completion_tokens=2, cached_calls=1)


class Remote:
    """`handle.method.remote(...)` of a Ray actor: here, the coroutine itself."""

    def __init__(self, fn: Any) -> None:
        self.remote = fn


class FakeBudget:
    """Holds one paid charge per call of each task, plus charges of tasks that never came back
    (`orphans`), until settled."""

    def __init__(self, orphans: int = 0) -> None:
        self.charges: dict[str, list[Forwarded]] = {
            "lost": [Forwarded("p", "m", PAID, (("method", "dead"),))] * orphans
        }
        self.settle = Remote(self._settle)
        self.settle_all = Remote(self._settle_all)

    def charge(self, task: str, tags: tuple[tuple[str, str], ...]) -> None:
        self.charges.setdefault(task, []).append(Forwarded("p", "m", PAID, tags))

    async def _settle(self, task: str) -> list[Forwarded]:
        return self.charges.pop(task, [])

    async def _settle_all(self) -> list[Forwarded]:
        out = [c for cs in self.charges.values() for c in cs]
        self.charges.clear()
        return out


class FakeWorker:
    """Answers each call with its own arguments; each call pays once (to the budget), hits the
    cache once, and logs one prompt."""

    def __init__(self, budget: FakeBudget) -> None:
        self.budget = budget
        self.tasks: list[int] = []
        self.run = Remote(self._run)

    async def _run(self, task: str, calls: list[tuple[Any, ...]]) -> list[Outcome]:
        self.tasks.append(len(calls))
        await asyncio.sleep(0.01)
        out = []
        for kind, name, record, _ in calls:
            tags = (("latent", record), ("method", name))
            self.budget.charge(task, tags)
            cached = Forwarded("p", "m", CACHED, tags, cached=True)
            prompts = [(record, {"method": name, "request": kind})]
            out.append(
                Outcome((kind, name, record), None, [cached, Forwarded(error="Boom")], prompts)
            )
        return out


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def log(self, latent: str) -> Any:
        lines = self.lines

        class Sink:
            def append(self, entry: dict[str, Any]) -> None:
                lines.append((latent, entry))

        return Sink()


async def test_calls_go_out_in_tasks_of_latents_per_task_and_come_back_to_their_callers():
    budget = FakeBudget(orphans=2)
    workers = [FakeWorker(budget), FakeWorker(budget)]
    ledger, logs = Ledger(), Logs()
    calls = RayCalls(workers, budget, ledger, per_task=8, prompt_logs=logs)  # type: ignore[arg-type]
    latents = [f"L{i}" for i in range(20)]
    got = await asyncio.gather(*(calls.explain("toy", r) for r in latents))  # type: ignore[arg-type]
    await calls.drain()

    assert got == [("explain", "toy", r) for r in latents]  # each caller its own result
    assert sorted(n for w in workers for n in w.tasks) == [4, 8, 8]  # 3 tasks, not 20
    assert calls.tasks == 3 and all(w.tasks for w in workers)  # both workers used
    # each call's paid answer (settled from the budget), its cache hit and its failure, once;
    # plus the two charges of a task that never returned, recorded by `drain`
    stats = ledger.stats()
    assert stats["calls"] == 20 + 2 and stats["cached_calls"] == 20
    assert stats["spent_usd"] == pytest.approx(22 * PAID.cost_usd)
    assert stats["errors"] == {"Boom": 20}
    assert Counter(dict(r.tags).get("latent") for r in ledger.records if not r.cached) == Counter(
        {**dict.fromkeys(latents, 1), None: 2}
    )
    assert sorted(latent for latent, _ in logs.lines) == sorted(latents)
    assert not budget.charges  # nothing left unsettled


async def test_a_lone_call_is_sent_without_waiting_for_a_full_task():
    budget = FakeBudget()
    worker = FakeWorker(budget)
    calls = RayCalls([worker], budget, None, per_task=8, linger_s=0.001)
    got = await asyncio.wait_for(calls.score("s", "L1", "expl"), timeout=5)  # type: ignore[arg-type]
    assert got == ("score", "s", "L1") and worker.tasks == [1]


async def test_a_task_that_fails_for_good_fails_each_of_its_calls_and_still_settles():
    budget = FakeBudget()

    class Dead:
        def __init__(self) -> None:
            self.run = Remote(self._run)

        async def _run(self, task: str, calls: list[Any]) -> Any:
            budget.charge(task, (("latent", "paid before dying"),))
            raise RuntimeError("actor died")

    dead = Dead()
    ledger = Ledger()
    calls = RayCalls([dead], budget, ledger, per_task=2)
    outcomes = await asyncio.gather(
        *(calls.explain("toy", r) for r in ["a", "b"]),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [RuntimeError, RuntimeError]
    assert ledger.stats()["calls"] == 1  # the dead task's paid call, settled with its failure


async def test_settling_a_task_frees_the_slot_a_dead_attempt_held_and_keeps_its_charges():
    from saexplain_ray.budget import Budget, ModelLimits

    budget = Budget(None, 0.0, {"m": ModelLimits(max_concurrency=1)})
    assert await budget.acquire("m", "t1") is None
    await budget.release("m", Forwarded("p", "m", PAID, (("latent", "a"),)), "t1")  # paid
    assert await budget.acquire("m", "t1") is None  # then its worker died: no release
    waiting = asyncio.ensure_future(budget.acquire("m", "t2"))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the dead attempt holds the model's one slot
    charges = await budget.settle("t1")  # the driver, after the retried task returned
    assert [dict(c.tags)["latent"] for c in charges] == ["a"]
    assert await asyncio.wait_for(waiting, timeout=1) is None
    assert budget.spent == PAID.cost_usd and await budget.settle("t1") == []


def test_a_task_holds_at_most_one_workers_share_of_the_concurrency() -> None:
    assert task_size(8, 64, 2) == 8  # plenty of slots: full tasks
    assert task_size(8, 8, 2) == 4  # one task of 8 would leave the second worker idle
    assert task_size(8, 16, 4) == 4
    assert task_size(8, 1, 4) == 1  # never empty
