"""The executor seam: a registered executor runs each method call (`MethodCalls`) while the
pipeline keeps pending pairs, phases and writing; `executor` is parsed and checked up front."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

import saexplain
from saexplain.errors import UnknownComponentError
from saexplain.hookspecs import Register
from saexplain.models import ExecutorSpec, Explanation, LatentRecord, RunConfig, Score
from saexplain.pipeline import arun, explain_and_score
from saexplain.protocols import MethodContext
from saexplain.testing import fresh_plugin_manager

from . import toy
from .test_pipeline import config, lines


class CountingCalls:
    """Runs each call in this process, as an executor's worker would, and counts them."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.explained: list[tuple[str, int]] = []
        self.scored: list[tuple[str, int]] = []

    def ctx(self) -> MethodContext:
        return MethodContext(providers=self.p.providers)

    async def explain(self, name: str, record: LatentRecord) -> Explanation:
        self.explained.append((name, record.latent.index))
        return await self.p.explainers[name].explain(record, self.ctx())

    async def score(self, name: str, record: LatentRecord, explanation: Explanation) -> Score:
        self.scored.append((name, record.latent.index))
        return await self.p.scorers[name].score(record, explanation, self.ctx())


class Inline:
    seen: ClassVar[list[CountingCalls]] = []

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    async def explain_and_score(
        self, p: Any, records: Sequence[LatentRecord], store: object, *, progress: bool
    ) -> None:
        calls = CountingCalls(p)
        Inline.seen.append(calls)
        await explain_and_score(p, records, store, progress=progress, calls=calls)


class InlinePlugin:
    @saexplain.hookimpl
    def register_executors(self, register: Register) -> None:
        register("inline", Inline)


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(InlinePlugin(), name="inline")
        Inline.seen.clear()
        yield pm


async def run(cfg: RunConfig, manager: Any) -> None:
    backend, coder, texts = toy.world()
    await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": toy.llm()},
        progress=False,
        manager=manager,
    )


def test_executor_settings_may_sit_beside_the_name():
    flat = ExecutorSpec.model_validate({"name": "ray", "address": "local", "workers": 4})
    assert flat == ExecutorSpec(name="ray", settings={"address": "local", "workers": 4})
    assert ExecutorSpec.model_validate("ray") == ExecutorSpec(name="ray")
    assert RunConfig.model_validate({**dict(model="m", coder="c", dataset="d")}).executor is None


async def test_an_executor_runs_every_call_and_the_pipeline_writes_once(tmp_path, manager):
    await run(config(tmp_path, name="local"), manager)
    cfg = config(tmp_path, name="inline", executor={"name": "inline", "flag": 1})
    await run(cfg, manager)
    (calls,) = Inline.seen
    assert sorted(calls.explained) == [("toy", i) for i in sorted(toy.WORDS)]
    assert sorted(calls.scored) == [("toyscore", i) for i in sorted(toy.WORDS)]

    def written(name: str) -> list[tuple[Any, ...]]:
        run_dir = tmp_path / name
        return sorted(
            (f, x["latent"]["index"], str(x.get("text")), str(x.get("value")), x["status"])
            for f in ("explanations.jsonl", "scores.jsonl")
            for x in lines(run_dir / f)
        )

    assert written("inline") == written("local")
    await run(cfg, manager)  # resume: every pair done, nothing reaches the executor
    assert [len(c.explained) + len(c.scored) for c in Inline.seen] == [2 * len(toy.WORDS), 0]


async def test_an_unknown_executor_fails_before_collecting(tmp_path, manager):
    with pytest.raises(UnknownComponentError, match="nosuch"):
        await run(config(tmp_path, executor="nosuch"), manager)
    assert not (tmp_path / "run" / "store").exists()
