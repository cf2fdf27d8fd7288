"""`await sx.aexplain(...)` keeps the event loop free: the model work (prepare's checks,
collection, records) runs in a worker thread, so an async application stays responsive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import saexplain as sx
from saexplain.testing import FakeBackend, PlantedValuesCoder, synthetic_corpus

from . import toy


class SlowBackend(FakeBackend):
    """A fake model whose every activation pass takes 50 ms, as a real model's would."""

    busy = False  # inside a pass
    passes = 0

    def latent_acts(self, *args: Any, **kwargs: Any) -> Any:
        self.busy = True
        self.passes += 1
        time.sleep(0.05)
        try:
            return super().latent_acts(*args, **kwargs)
        finally:
            self.busy = False


async def test_aexplain_leaves_the_event_loop_free(tmp_path):
    backend = SlowBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=0, vocab=toy.VOCAB, min_words=8, max_words=40)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    results = await sx.aexplain(
        backend,
        coder,
        latents=sorted(toy.WORDS),
        explainers=[{"name": "given", "settings": {"explanations": {"1": "cats"}}}],
        scorers=[],
        dataset=texts,
        n_tokens=32 * 160,
        context_length=32,
        batch_size=8,  # 20 passes of 50 ms: a second of model work
        records={"rare_below": 2},
        output_dir=tmp_path,
        progress=False,
    )
    elapsed = time.perf_counter() - started
    stop.set()
    await ticking
    assert results[1].explanation("given") == "cats"
    assert elapsed > 1.0
    # a blocked loop ticks a few times in total; a free one about every 10 ms (say at half pace)
    assert ticks > elapsed / 0.01 / 2, (ticks, elapsed)


async def test_a_cancelled_run_lets_its_directory_go_only_after_the_model_work(tmp_path):
    backend = SlowBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=0, vocab=toy.VOCAB, min_words=8, max_words=40)
    run = asyncio.create_task(
        sx.aexplain(
            backend,
            coder,
            latents=sorted(toy.WORDS),
            explainers="given",
            scorers=[],
            dataset=texts,
            n_tokens=32 * 80,
            context_length=32,
            batch_size=8,
            output_dir=tmp_path,
            name="run",
            progress=False,
        )
    )
    while not backend.passes:  # collection has started
        await asyncio.sleep(0.001)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    # the model work had ended before the run directory was let go
    assert not backend.busy
