"""One model lock, owned by the backend: every method's model work and the pipeline's model
stages take it, so hooks of concurrent passes never meet on the shared model."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from saexplain.concurrency import model_lock, run_model
from saexplain.pipeline import arun
from saexplain.protocols import ModelLocking
from saexplain.testing import FakeBackend, PlantedValuesCoder, ScriptedProvider

from . import toy
from .test_pipeline import config, manager  # noqa: F401  (the fixture)


class Overlaps(FakeBackend):
    """A FakeBackend that notices model calls from different threads running at the same time
    (a call nested in another, `generate` calling `logits`, is the same thread's one pass)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count = threading.Lock()
        self.inside: dict[int, int] = {}  # thread id -> nesting depth
        self.most = 0  # the most threads inside the model at once
        self.threads: set[str] = set()

    def _enter(self) -> None:
        with self._count:
            me = threading.get_ident()
            self.inside[me] = self.inside.get(me, 0) + 1
            self.most = max(self.most, len(self.inside))
            self.threads.add(threading.current_thread().name)

    def _leave(self) -> None:
        with self._count:
            me = threading.get_ident()
            self.inside[me] -= 1
            if not self.inside[me]:
                del self.inside[me]

    def _watched(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            time.sleep(0.001)  # widen the window in which another call could start
            return fn(*args, **kwargs)
        finally:
            self._leave()

    def latent_acts(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().latent_acts, *args, **kwargs)

    def logits(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().logits, *args, **kwargs)

    def probe(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().probe, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().generate, *args, **kwargs)

    def unembed(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().unembed, *args, **kwargs)


def test_fake_backend_owns_a_reentrant_lock():
    backend = FakeBackend()
    assert isinstance(backend, ModelLocking)
    assert model_lock(backend) is backend.model_lock
    with model_lock(backend), model_lock(backend):  # model work may nest
        pass


def test_a_backend_without_a_lock_shares_the_process_wide_one():
    class Bare:
        pass

    assert not isinstance(Bare(), ModelLocking)
    assert model_lock(Bare()) is model_lock(Bare())


async def test_run_model_runs_off_the_loop_under_the_lock():
    backend = FakeBackend()
    loop_thread = threading.current_thread()

    def work(x: int, *, y: int) -> tuple[int, bool, bool]:
        others = threading.Thread(target=lambda: seen.append(backend.model_lock.acquire(False)))
        others.start()
        others.join()
        return x + y, threading.current_thread() is not loop_thread, seen == [False]

    seen: list[bool] = []
    assert await run_model(backend, work, 1, y=2) == (3, True, True)
    assert backend.model_lock.acquire(False)  # released afterwards
    backend.model_lock.release()


async def test_model_methods_and_stages_never_overlap_on_the_model(tmp_path, manager):  # noqa: F811
    from saexplain.testing import competent_explainer

    backend = Overlaps(d_model=16, n_layers=4)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12)
    cfg = config(
        tmp_path,
        explainers=[
            {"name": "selfexplain", "settings": {"n_scales": 4, "max_new_tokens": 2}},
            {"name": "tokenchange", "settings": {"n_contexts": 4, "batch_size": 1}},
            "vocabproj",
        ],
        scorers=[],
        concurrency=8,
    )
    await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=toy.world()[2],
        providers={"default": ScriptedProvider(competent_explainer, latency_s=0.001)},
        progress=False,
    )
    assert len(backend.threads) > 1  # methods' model work ran in worker threads...
    assert backend.most == 1  # ...one call at a time


async def test_concurrent_run_model_calls_are_serialised():
    backend = Overlaps()
    tokens = backend.tokenize(["a b c"])
    await asyncio.gather(*(run_model(backend, backend.logits, tokens) for _ in range(8)))
    assert backend.most == 1
