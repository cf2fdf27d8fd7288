"""collect -> build records -> explain -> score, over a selection of latents, resumably.

    results = await arun(RunConfig(...))                       # everything loaded from names
    results = await arun(config, backend=b, coder=c)           # live objects (notebook API)

Two halves: `saexplain.pipeline.resolve` turns a config (and live objects) into checked
components before any heavy work (`prepare` -> `Prepared`); `saexplain.pipeline.stages` runs
them: activations are collected into the run's store (resumable), records are built once per
latent and kept in the run directory (a run whose methods read no records, like a selfexplain-only
run, skips both: each latent gets a record holding only itself), explainers and scorers run
concurrently across latents under one bound, then generic answers are flagged and the report
written. Each result is appended to the run directory the moment it exists; a rerun skips
finished (latent, method) pairs of the same method configuration. One process at a time runs a
run directory (it holds `RunDir.lock` from start to end). See `saexplain.rundir` for the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from saexplain.errors import ConfigError
from saexplain.interrupts import stop_requested
from saexplain.models import RunConfig
from saexplain.pipeline.resolve import (
    Prepared,
    build_backend,
    build_coder,
    build_coders,
    build_methods,
    check_coder_fits,
    config_digest,
    manifest,
    parse_coder_spec,
    prepare,
    resolve_dataset,
    run_path,
)
from saexplain.pipeline.stages import (
    bare_records,
    build_run_records,
    collect_store,
    explain_and_score,
    finish_report,
    method_ids,
    prompt_wordings,
    write_flags,
)
from saexplain.plugins import PluginManager
from saexplain.protocols import Executor, Provider
from saexplain.providers import close_providers, record_provider_calls
from saexplain.registry import instantiate
from saexplain.secrets import redact_secrets

if TYPE_CHECKING:
    from saexplain.report.results import RunResults
    from saexplain.store import ActivationStore

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("saexplain.pipeline")

__all__ = [
    "Prepared",
    "arun",
    "arun_prepared",
    "bare_records",
    "build_backend",
    "build_coder",
    "build_coders",
    "build_executor",
    "build_methods",
    "build_run_records",
    "check_coder_fits",
    "collect_store",
    "config_digest",
    "explain_and_score",
    "finish_report",
    "manifest",
    "method_ids",
    "parse_coder_spec",
    "prepare",
    "resolve_dataset",
    "run",
    "run_path",
    "write_flags",
]


async def _off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a worker thread, so the event loop stays free for the caller's
    other tasks while the model computes (`await sx.aexplain(...)` in an async application).

    A thread cannot be stopped. When the awaiting task is cancelled, this waits for `fn` to end
    before passing the cancellation on, so the run directory is not unlocked (and perhaps run
    by another process) while `fn` still writes to it; unless Ctrl-C asked the run to stop
    (`saexplain.interrupts`): then the process is ending, and the thread is a daemon thread
    (not one of asyncio's executor, which the interpreter waits for), so a second Ctrl-C still
    stops at once."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()  # as asyncio.to_thread: the caller's context variables

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast(T, result))  # fn returned it

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as e:  # handed to the awaiting task, which raises it
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"saexplain-{fn.__name__}", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done() and not stop_requested():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([done])
        if done.done():
            done.exception()  # looked at: asyncio warns about an exception nobody retrieved
        raise


def build_executor(p: Prepared) -> Executor | None:
    """The run's executor (`RunConfig.executor`, a `register_executors` plugin), or None: the
    methods run in this process."""
    spec = p.config.executor
    if spec is None:
        return None
    executor = instantiate("executor", p.manager.executors, spec.name, spec.settings)
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor {spec.name!r} has no `explain_and_score(p, records, ...)`")
    return executor


async def arun_prepared(p: Prepared, *, progress: bool = True) -> RunResults:
    """Run a prepared pipeline to the end (or resume it). The run directory is locked for the
    whole run: a second process on it fails at once (`RunDirBusyError`). Model work and the
    report run in a worker thread: the event loop stays free meanwhile."""
    with p.run_dir.lock():
        p.run_dir.check_same_run(p.config)  # again: another process may have run it meanwhile
        p.run_dir.write_json("config", redact_secrets(p.config.model_dump(mode="json")))
        # the methods' configuration ids name the results the report shows
        methods = method_ids(p).model_dump(mode="json")
        p.run_dir.write_json("manifest", {**manifest(p), "methods": methods})
        coders = ", ".join(c.id for c in p.coders)
        log.info("run %s: %s, coders %s", p.run_dir.path, p.backend.model_id, coders)
        executor = build_executor(p)  # an unknown name or bad setting fails before collecting
        store: ActivationStore | None = None
        if p.collects:
            # an executor that collects (CollectingExecutor) shards it over its workers
            store = await _off_loop(collect_store, p, progress=progress, executor=executor)
            records = await _off_loop(build_run_records, p, store, progress=progress)
        else:  # no chosen method reads records: no dataset is read, nothing collected
            records = bare_records(p)
        try:
            if executor is None:
                await explain_and_score(p, records, store, progress=progress)
            else:
                await executor.explain_and_score(p, records, store, progress=progress)
        finally:
            await close_providers(p.providers)  # saves spend.json, closes HTTP sessions
        record_provider_calls(p.run_dir, p.providers)  # spend, retries, errors: manifest
        write_flags(p.run_dir, prompts=prompt_wordings(p.explainers))
        return await _off_loop(finish_report, p.run_dir)


async def arun(
    config: RunConfig,
    *,
    model: object | None = None,
    coder: object | None = None,
    dataset: object | None = None,
    providers: Mapping[str, Provider] | None = None,
    progress: bool = True,
    manager: PluginManager | None = None,
    backend_settings: Mapping[str, Any] | None = None,
) -> RunResults:
    """Prepare (all checks first) and run. Rerun the same config to resume."""
    # loading and checking the model and coder is model work too: off the event loop
    p = await _off_loop(
        prepare,
        config,
        model=model,
        coder=coder,
        dataset=dataset,
        providers=providers,
        manager=manager,
        backend_settings=backend_settings,
    )
    return await arun_prepared(p, progress=progress)


def run(config: RunConfig, **kwargs: Any) -> RunResults:
    """`arun` for synchronous code (also inside a running notebook loop)."""
    from saexplain._async import run_sync

    return run_sync(arun(config, **kwargs))
