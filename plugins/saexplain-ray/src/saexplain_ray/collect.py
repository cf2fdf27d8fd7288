"""Collection sharded over Ray workers: slices of the token stream, one store, one manifest writer.

The driver cuts the run's token budget into slices of whole contexts (`slice_contexts`, else
about four per collector) and hands them, one at a time, to `collectors` `SliceCollector` actors.
Each actor builds the run's backend and coders once, from the run config and the plugins (the
installed ones and those the driver registered at run time), and collects each slice it gets
into shard folders of that slice in the run's store, which must be on storage every node sees
(`saexplain.store.slices.collect_slice`). The driver alone writes the manifest, once per
finished slice (`commit_slice`, an atomic replace). A worker that dies is restarted by Ray and
its slice collected again there (`max_restarts`); a half-written slice never reaches the
manifest. A rerun keeps every committed slice and collects the others.

When the caller passed a model or coder object (not a name the workers can load), or the
workers cannot receive the run's plugins or dataset, the run collects in the driver as without
an executor, and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from saexplain.concurrency import model_lock
from saexplain.interrupts import check_interrupt
from saexplain.models import LatentRecord, RunConfig
from saexplain.pipeline import Prepared
from saexplain.pipeline.resolve import (
    Rebuild,
    build_backend,
    build_coders,
    check_coder_fits,
    resolve_dataset,
)
from saexplain.pipeline.stages import store_settings
from saexplain.plugins import get_plugin_manager
from saexplain.store.slices import (
    Slice,
    SliceResult,
    collect_slice,
    commit_slice,
    finish_slices,
    open_sliced,
    plan_slices,
)
from saexplain.store.writer import CollectionProgress
from saexplain_ray.executor import RayExecutor, RaySettings

__all__ = ["CollectPayload", "RayCollectSettings", "ShardingRayExecutor", "SliceCollector"]

log = logging.getLogger("saexplain.ray")

SLICES_PER_COLLECTOR = 4  # default slicing: enough slices that a slow one does not hold up all


class RayCollectSettings(RaySettings):
    """`RaySettings` and those of collection on the cluster."""

    # collect the store on the workers (False: in the driver, as without an executor)
    shard_collection: bool = True
    # contexts per slice (the unit a worker collects and a rerun keeps); None: the token
    # budget cut into about 4 slices per collector
    slice_contexts: int | None = Field(default=None, ge=1)
    collectors: int | None = Field(default=None, ge=1)  # collecting actors; None: `workers`
    gpus_per_collector: float = Field(default=0.0, ge=0.0)  # GPUs Ray reserves for each


@dataclass
class CollectPayload:
    """What a `SliceCollector` builds its backend and coders from."""

    config: RunConfig
    rebuild: Rebuild
    plugins: dict[str, object]  # the driver's run-time plugins, by name
    store_path: str
    settings: dict[str, Any]  # `collection_settings` keywords (`stages.store_settings`)


class SliceCollector:
    """Collects slices of the token stream into the store (decorated as a Ray actor by the
    executor). The backend and coders are built on the first slice and kept."""

    def __init__(self, payload: CollectPayload) -> None:
        self.payload = payload
        self._built: tuple[Any, list[Any], object] | None = None

    def _build(self) -> tuple[Any, list[Any], object]:
        if self._built is None:
            p = self.payload
            manager = get_plugin_manager()
            for name, plugin in p.plugins.items():
                manager.register_plugin(plugin, name=name)
            r = p.rebuild
            backend = build_backend(r.model, p.config, manager, **r.backend_settings)
            coders, _ = build_coders(p.config, manager, backend, r.coder)
            for c in coders:  # the driver's checks, in the driver's order (a stateful tokenizer)
                check_coder_fits(backend, c)
            dataset = r.dataset if r.dataset is not None else p.config.dataset
            self._built = (backend, coders, resolve_dataset(dataset, manager))
        return self._built

    def collect(self, start: int, stop: int) -> SliceResult:
        backend, coders, dataset = self._build()
        with model_lock(backend):
            return collect_slice(
                backend,
                coders,
                dataset,
                self.payload.store_path,
                Slice(start, stop),
                **self.payload.settings,
            )


def _not_sharded(p: Prepared) -> str | None:
    """Why the workers cannot collect this run (None: they can)."""
    if p.rebuild is None:
        return (
            "the model or coder was passed as an object, which the workers cannot load again "
            "(pass their names, as in a run config, to shard collection)"
        )
    return None


def _payload(p: Prepared, path: Path) -> CollectPayload | str:
    """The collectors' payload, or why it cannot travel (something that does not pickle)."""
    assert p.rebuild is not None
    payload = CollectPayload(
        config=p.config,
        rebuild=p.rebuild,
        plugins=p.manager.runtime_plugins(),
        store_path=str(path),
        settings=store_settings(p),
    )
    import ray

    try:
        ray.cloudpickle.dumps(payload)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        return f"the run's plugins or dataset cannot be sent to the workers ({e})"
    return payload


@dataclass
class ShardingRayExecutor(RayExecutor):
    """The `ray` executor, which also collects the store on the cluster (`CollectingExecutor`).

    The Ray cluster this executor starts for collection (`address: local`) stays up for the
    explain-and-score stage and stops after it."""

    # after a sharded collection: the attempts of each slice the driver saw fail, and the times
    last_collect: dict[str, Any] = field(default_factory=dict)
    _started: bool = False

    @property
    def collect_settings(self) -> RayCollectSettings:
        s = self.settings
        return s if isinstance(s, RayCollectSettings) else RayCollectSettings(**s.model_dump())

    def collect(self, p: Any, path: Path, *, progress: bool) -> bool:
        """Collect the run's store at `path` on the workers; False: collect in the driver."""
        s = self.collect_settings
        if not s.shard_collection:
            return False
        prepared: Prepared = p
        payload: CollectPayload | str | None = _not_sharded(prepared)
        if payload is None:
            self._started = self._connect() or self._started
            payload = _payload(prepared, path)
        if isinstance(payload, str):
            log.warning("ray: collecting in this process, not on the workers: %s", payload)
            return False
        self._collect(prepared, path, payload, s, progress=progress)
        return True

    def _collect(
        self,
        p: Prepared,
        path: Path,
        payload: CollectPayload,
        s: RayCollectSettings,
        *,
        progress: bool,
    ) -> None:
        import ray

        t0 = time.perf_counter()
        settings = payload.settings
        manifest = open_sliced(p.backend, p.coders, p.dataset, path, **settings)
        if manifest.complete:
            return
        n = s.collectors or s.workers
        budget = int(settings["n_tokens"]) // int(settings["context_length"])
        size = s.slice_contexts or max(1, math.ceil(budget / (SLICES_PER_COLLECTOR * n)))
        todo, manifest = plan_slices(path, manifest, size)
        kept = len(manifest.shards) + len(manifest.parked)
        log.info(
            "ray: collecting %d slice(s) of <= %d contexts on %d collector(s) (%d shard(s) kept)",
            len(todo),
            size,
            min(n, len(todo)),
            kept,
        )
        collector_cls = ray.remote(SliceCollector)
        actors = [
            collector_cls.options(
                num_cpus=s.cpus_per_worker,
                num_gpus=s.gpus_per_collector,
                max_restarts=s.max_restarts,
                max_task_retries=s.max_restarts,
            ).remote(payload)  # by value: a restarted actor is built from it again
            for _ in range(min(n, len(todo)))
        ]
        queue = list(todo)
        running: dict[Any, tuple[Any, Slice]] = {}

        def submit(actor: Any) -> None:
            if queue:
                part = queue.pop(0)
                running[actor.collect.remote(part.start, part.stop)] = (actor, part)

        tokens_read = 0
        # one bar in the driver, advanced as each slice is committed
        ctx = int(settings["context_length"])
        bar = CollectionProgress(progress, budget * ctx, manifest.n_contexts * ctx)
        try:
            for actor in actors:
                submit(actor)
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                actor, part = running.pop(done[0])
                try:
                    result: SliceResult = ray.get(done[0])
                except Exception:
                    log.error(
                        "ray: collecting contexts [%d, %d) failed on a worker; rerun to resume "
                        "(the finished slices are kept)",
                        part.start,
                        part.stop,
                    )
                    raise
                manifest = commit_slice(path, manifest, result)
                bar.update(result.n_contexts * ctx)
                tokens_read = max(tokens_read, result.n_tokens_read)
                log.info(
                    "ray: slice [%d, %d) collected (%d contexts)",
                    part.start,
                    part.stop,
                    result.n_contexts,
                )
                check_interrupt()  # Ctrl-C: stop here; the committed slices are kept
                submit(actor)
        finally:
            bar.close()
            for actor in actors:
                ray.kill(actor)
        finish_slices(path, manifest, n_tokens_read=tokens_read)
        self.last_collect = {
            "slices": len(todo),
            "slice_contexts": size,
            "collectors": len(actors),
            "seconds": time.perf_counter() - t0,
        }

    async def explain_and_score(
        self, p: Prepared, records: Sequence[LatentRecord], store: object, *, progress: bool
    ) -> None:
        import ray

        try:
            await super().explain_and_score(p, records, store, progress=progress)
        finally:
            if self._started and ray.is_initialized():
                self._started = False
                await asyncio.to_thread(ray.shutdown)
