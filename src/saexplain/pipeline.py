"""collect -> build records -> explain -> score, over a selection of latents, resumably.

    results = await arun(RunConfig(...))                       # everything loaded from names
    results = await arun(config, backend=b, coder=c)           # live objects (notebook API)

Everything that can be checked is checked before heavy work (`prepare`): method names and
settings, providers (and their keys), the backend, the coder's hook and width. Then activations
are collected into the run's store (resumable), records are built once per latent and kept in the
run directory, and explainers and scorers run concurrently across latents under one bound. Each
result is appended to the run directory the moment it exists; a rerun skips finished (latent,
method) pairs. See `saexplain.rundir` for the files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.errors import ConfigError
from saexplain.models import (
    Explanation,
    LatentRecord,
    RunConfig,
    Score,
    Status,
    Usage,
)
from saexplain.plugins import PluginManager, get_plugin_manager
from saexplain.protocols import (
    Backend,
    Explainer,
    MethodContext,
    Provider,
    Scorer,
    SparseCoder,
    TokenBatch,
)
from saexplain.providers.build import (
    LoggedProvider,
    build_providers,
    current_latent,
    current_method,
)
from saexplain.registry import instantiate
from saexplain.rundir import RunDir, explanation_key, redact_secrets
from saexplain.store._io import derive_seed

if TYPE_CHECKING:
    from saexplain.report.results import RunResults
    from saexplain.sampling import RecordConfig
    from saexplain.store import ActivationStore

log = logging.getLogger("saexplain.pipeline")


# Settings that decide what the store and the records hold: a run directory keeps them fixed.
_DATA_FIELDS = (
    "model",
    "coder",
    "coder_settings",
    "dataset",
    "text_field",
    "split",
    "n_tokens",
    "context_length",
    "prepend_bos",
    "seed",
    "records",
)


# --- preparation: everything checkable before heavy work ------------------------------------------


@dataclass
class Prepared:
    """A run's resolved components, checked and ready."""

    config: RunConfig
    backend: Backend
    coder: SparseCoder
    explainers: dict[str, Explainer]
    scorers: dict[str, Scorer]
    providers: dict[str, Provider]
    record_config: RecordConfig
    dataset: object
    run_dir: RunDir
    manager: PluginManager = field(repr=False, default_factory=get_plugin_manager)


def build_methods(
    config: RunConfig, manager: PluginManager
) -> tuple[dict[str, Explainer], dict[str, Scorer]]:
    explainers = {
        s.name: instantiate("explainer", manager.explainers, s.name, s.settings)
        for s in config.explainers
    }
    scorers = {
        s.name: instantiate("scorer", manager.scorers, s.name, s.settings) for s in config.scorers
    }
    if not explainers:
        raise ConfigError("the run has no explainers: name at least one")
    return explainers, scorers


def build_backend(
    model: object, config: RunConfig, manager: PluginManager, **settings: Any
) -> Backend:
    if isinstance(model, Backend):
        return model
    name = config.backend or (None if isinstance(model, str) else manager.detect_backend(model))
    if name is None:
        known = manager.backends.names()
        raise ConfigError(
            f"no backend for model {model!r}: set `backend` to one of {known} "
            "(install saexplain-transformerlens or saexplain-nnsight)"
        )
    backend: Backend = instantiate(
        "backend", manager.backends, name, {**config.backend_settings, **settings}, model
    )
    return backend


def parse_coder_spec(spec: str) -> tuple[str, str]:
    """`"source:spec"` -> (source, spec); a bare spec means SAELens (a release id or a path)."""
    source, sep, rest = spec.partition(":")
    if (
        sep
        and re.fullmatch(r"[A-Za-z][\w-]*", source)
        and not (len(source) == 1 and os.name == "nt")
    ):
        return source, rest
    return "saelens", spec


def build_coder(
    coder: object, config: RunConfig, manager: PluginManager, backend: Backend
) -> SparseCoder:
    if isinstance(coder, SparseCoder):
        return coder
    if isinstance(coder, tuple) and len(coder) == 2:  # (release, sae_id)
        coder = f"saelens:{coder[0]}/{coder[1]}"
    if isinstance(coder, str):
        source, spec = parse_coder_spec(coder)
        loaded: SparseCoder = instantiate(
            "coder", manager.coders, source, {"backend": backend, **config.coder_settings}, spec
        )
        return loaded
    module = type(coder).__module__.split(".")[0]
    if module == "sae_lens":  # a live SAELens SAE object
        wrapped: SparseCoder = instantiate(
            "coder", manager.coders, "saelens", {"backend": backend, **config.coder_settings}, coder
        )
        return wrapped
    raise ConfigError(
        f"cannot use {type(coder).__name__} as a sparse coder: pass a SAELens SAE, "
        "(release, sae_id), a 'source:spec' string, or an object with the SparseCoder attributes"
    )


def check_coder_fits(backend: Backend, coder: SparseCoder) -> None:
    """Coder/model mismatches (wrong hook, wrong width) found on two tokens, not after an hour."""
    if int(coder.d_in) != int(backend.d_model) and coder.hook.endswith(("resid_pre", "resid_post")):
        raise ConfigError(
            f"coder {coder.id} reads width {coder.d_in} at {coder.hook}, "
            f"but {backend.model_id} has d_model {backend.d_model}"
        )
    tokens: TokenBatch = backend.tokenize(["Hello world"], prepend_bos=True)
    backend.latent_acts(tokens, [coder])  # raises HookNameError / DimensionMismatchError


def resolve_dataset(dataset: object) -> object:
    if dataset == "demo":
        from saexplain.demo_data import demo_corpus

        return demo_corpus()
    return dataset


def config_digest(config: RunConfig) -> str:
    data = config.model_dump(mode="json", include=set(_DATA_FIELDS))
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=4).hexdigest()


def run_path(config: RunConfig) -> Path:
    if config.name:
        return Path(config.output_dir) / config.name
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{config.model}-{config.coder}").strip("-")[-60:]
    return Path(config.output_dir) / f"{slug}-{config_digest(config)}"


def _check_same_data(run_dir: RunDir, config: RunConfig) -> None:
    old = run_dir.read_json("config")
    if old is None:
        return
    new = redact_secrets(config.model_dump(mode="json"))
    changed = [k for k in _DATA_FIELDS if old.get(k) != new.get(k)]
    if changed:
        raise ConfigError(
            f"run directory {run_dir.path} holds a run with different {changed}; "
            "choose another `name` (or output_dir) for a new run"
        )


def prepare(
    config: RunConfig,
    *,
    model: object | None = None,
    coder: object | None = None,
    dataset: object | None = None,
    providers: Mapping[str, Provider] | None = None,
    manager: PluginManager | None = None,
    backend_settings: Mapping[str, Any] | None = None,
) -> Prepared:
    """Resolve and check everything; raises a clear error before any heavy work."""
    from saexplain.sampling import RecordConfig

    manager = manager or get_plugin_manager()
    explainers, scorers = build_methods(config, manager)
    try:
        record_config = RecordConfig.model_validate({"seed": config.seed, **config.records})
    except ValueError as e:
        raise ConfigError(f"bad `records` settings: {e}") from e
    provider_map = build_providers(config, manager, explainers, scorers, providers)
    backend = build_backend(
        config.model if model is None else model, config, manager, **(backend_settings or {})
    )
    sparse_coder = build_coder(config.coder if coder is None else coder, config, manager, backend)
    check_coder_fits(backend, sparse_coder)
    run_dir = RunDir(run_path(config))
    _check_same_data(run_dir, config)
    return Prepared(
        config=config,
        backend=backend,
        coder=sparse_coder,
        explainers=explainers,
        scorers=scorers,
        providers=provider_map,
        record_config=record_config,
        dataset=resolve_dataset(config.dataset if dataset is None else dataset),
        run_dir=run_dir,
        manager=manager,
    )


# --- the run --------------------------------------------------------------------------------------


def manifest(p: Prepared) -> dict[str, Any]:
    from saexplain import __version__

    plugins = [
        {"name": i.name, "distribution": i.distribution, "version": i.version, "state": i.state}
        for i in p.manager.info()
    ]
    return {
        "saexplain_version": __version__,
        "plugins": plugins,
        "seed": p.config.seed,
        "model": p.backend.model_id,
        "backend": p.backend.name,
        "coder": {"id": p.coder.id, "hook": p.coder.hook, "d_sae": int(p.coder.d_sae)},
        "prepend_bos": p.config.prepend_bos,
        "bos_token_id": p.backend.bos_token_id,
        "providers": {
            role: {"name": prov.name, "model": prov.model} for role, prov in p.providers.items()
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def collect_store(p: Prepared, *, progress: bool) -> ActivationStore:
    from saexplain.store import collect

    cfg = p.config
    path = Path(cfg.store_dir) if cfg.store_dir else p.run_dir.path / "store"
    return collect(
        p.backend,
        p.coder,
        p.dataset,
        path,
        context_length=cfg.context_length,
        n_tokens=cfg.n_tokens,
        batch_size=cfg.batch_size,
        prepend_bos=cfg.prepend_bos,
        text_field=cfg.text_field,
        split=cfg.split,
        seed=cfg.seed,
        progress=progress,
        resume=True,
    )


def build_run_records(p: Prepared, store: ActivationStore, *, progress: bool) -> list[LatentRecord]:
    """Records of the selected latents; reuses those a previous attempt wrote."""
    from saexplain.sampling import RecordBuilder, select_latents

    report = select_latents(
        store,
        p.config.latents,
        coder_id=p.coder.id,
        seed=p.config.seed,
        rare_below=p.record_config.rare_below,
    )
    alive = [i for i in report.latents if i not in set(report.dead)]
    if not alive:
        raise ConfigError(
            f"no alive latents in the selection ({len(report.latents)} selected, "
            f"{len(report.dead)} never fired over {store.n_tokens} tokens): select other latents "
            "or collect more tokens"
        )
    stored = p.run_dir.stored_records()
    builder = RecordBuilder(store, p.backend, p.record_config, coder_id=p.coder.id)
    records: list[LatentRecord] = []
    todo = [i for i in report.latents if builder.ref(i).key not in stored]
    bar = _bar(progress, len(todo), "records")
    for index in report.latents:
        key = builder.ref(index).key
        if key in stored:
            records.append(stored[key])
            continue
        outcome = builder.build(index)
        p.run_dir.latents.append(
            {
                "latent": outcome.latent.model_dump(mode="json"),
                "status": outcome.status,
                "reason": outcome.message,
                "count": outcome.count,
                "n_windows": outcome.n_windows,
                "stats": None
                if outcome.record is None
                else outcome.record.stats.model_dump(mode="json"),
            }
        )
        if outcome.record is not None:
            p.run_dir.records.append(outcome.record)
            records.append(outcome.record)
        bar.update(1)
    bar.close()
    return records


class _Bar:
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


def _bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled or total == 0:
        return _Bar()
    import importlib

    tqdm: Any = importlib.import_module("tqdm.auto").tqdm
    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)


@dataclass
class _Spend:
    usage: Usage = field(default_factory=Usage)

    def add(self, result: Explanation | Score) -> None:
        self.usage = self.usage + result.usage

    def text(self) -> str:
        u = self.usage
        return f"tokens={u.prompt_tokens + u.completion_tokens} ${u.cost_usd:.4f}"


def _error_result(make: Callable[..., Any], exc: BaseException, **fields: Any) -> Any:
    log.warning("%s failed: %s: %s", fields, type(exc).__name__, exc)
    return make(status=Status.ERROR, error=f"{type(exc).__name__}: {exc}"[:2000], **fields)


async def _guarded(
    sem: asyncio.Semaphore, latent_key: str, method: str, work: Callable[[], Awaitable[Any]]
) -> Any:
    async with sem:
        current_latent.set(latent_key)
        current_method.set(method)
        return await work()


async def explain_and_score(
    p: Prepared, records: Sequence[LatentRecord], store: object, *, progress: bool
) -> None:
    """Every pending (latent, explainer) and (latent, explainer, scorer) pair, concurrently."""
    providers: Mapping[str, Provider] = p.providers
    if p.config.log_prompts:
        providers = {r: LoggedProvider(v, p.run_dir) for r, v in providers.items()}
    done_e = p.run_dir.done_explanations()
    done_s = p.run_dir.done_scores()
    pending = sum((r.latent.key, e) not in done_e for r in records for e in p.explainers) + sum(
        (r.latent.key, e, s) not in done_s for r in records for e in p.explainers for s in p.scorers
    )
    bar = _bar(progress, pending, "explain+score")
    spend = _Spend()
    sem = asyncio.Semaphore(p.config.concurrency)

    def ctx_for(record: LatentRecord) -> MethodContext:
        return MethodContext(
            backend=p.backend,
            coder=p.coder,
            providers=providers,
            store=store,
            seed=derive_seed(p.config.seed, record.latent.key),
        )

    async def explain_one(record: LatentRecord, name: str, explainer: Explainer) -> Explanation:
        key = (record.latent.key, name)
        if key in done_e:
            return done_e[key]
        try:
            result: Explanation = await _guarded(
                sem, record.latent.key, name, lambda: explainer.explain(record, ctx_for(record))
            )
            if result.explainer != name:  # a registered alias: key results by the run's name
                result = result.model_copy(update={"explainer": name})
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # one method's crash never takes the run down
            result = _error_result(Explanation, e, latent=record.latent, explainer=name)
        p.run_dir.explanations.append(result)
        spend.add(result)
        bar.update(1)
        bar.set_postfix_str(spend.text())
        return result

    async def score_one(
        record: LatentRecord, explanation: Explanation, name: str, scorer: Scorer
    ) -> None:
        key = (record.latent.key, explanation.explainer, name)
        if key in done_s:
            return
        if explanation.status != Status.OK:
            result = Score(
                latent=record.latent,
                scorer=name,
                explainer=explanation.explainer,
                status=Status.ERROR,
                error=f"explanation not available ({explanation.status}): {explanation.error}",
            )
        else:
            try:
                result = await _guarded(
                    sem,
                    record.latent.key,
                    f"{explanation.explainer}/{name}",
                    lambda: scorer.score(record, explanation, ctx_for(record)),
                )
                if result.scorer != name or result.explainer != explanation.explainer:
                    result = result.model_copy(
                        update={"scorer": name, "explainer": explanation.explainer}
                    )
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:
                result = _error_result(
                    Score,
                    e,
                    latent=record.latent,
                    scorer=name,
                    explainer=explanation.explainer,
                )
        # a failed (not errored) explanation is final: so is the score that could not be made
        p.run_dir.scores.append(result)
        spend.add(result)
        bar.update(1)
        bar.set_postfix_str(spend.text())

    async def one_latent(record: LatentRecord) -> None:
        explanations = await asyncio.gather(
            *(explain_one(record, n, e) for n, e in p.explainers.items())
        )
        await asyncio.gather(
            *(score_one(record, ex, n, s) for ex in explanations for n, s in p.scorers.items())
        )

    try:
        await asyncio.gather(*(one_latent(r) for r in records))
    finally:
        bar.close()


def finish_report(run_dir: RunDir) -> RunResults:
    from saexplain.report import RunResults, write_report

    results = RunResults.load(run_dir.path)
    write_report(run_dir.path, results=results)
    return results


def write_flags(run_dir: RunDir) -> dict[str, Any]:
    """Flag answers an explainer gave for many latents alike ("en", "a word"): they say nothing
    about any one latent. Written to `flags.json`; the explanations themselves stay untouched."""
    from saexplain.explainers.selfexplain import flag_generic

    latest = {explanation_key(e): e for e in run_dir.explanations.read(Explanation)}
    by_explainer: dict[str, list[Explanation]] = {}
    for e in latest.values():
        by_explainer.setdefault(e.explainer, []).append(e)
    generic: dict[str, list[dict[str, str]]] = {}
    for name, explanations in sorted(by_explainer.items()):
        flagged = [
            {"latent": e.latent.key, "text": e.text}
            for e, flag in zip(explanations, flag_generic(explanations), strict=True)
            if flag
        ]
        if flagged:
            generic[name] = flagged
            log.warning("%s gave %d generic explanations (see flags.json)", name, len(flagged))
    flags: dict[str, Any] = {"generic": generic}
    run_dir.write_json("flags", flags)
    return flags


async def arun_prepared(p: Prepared, *, progress: bool = True) -> RunResults:
    """Run a prepared pipeline to the end (or resume it)."""
    p.run_dir.write_json("config", redact_secrets(p.config.model_dump(mode="json")))
    p.run_dir.write_json("manifest", manifest(p))
    store = collect_store(p, progress=progress)
    records = build_run_records(p, store, progress=progress)
    await explain_and_score(p, records, store, progress=progress)
    write_flags(p.run_dir)
    return finish_report(p.run_dir)


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
    p = prepare(
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
