"""Running a prepared run, stage by stage: collect -> records -> explain + score -> flags -> report.

Each stage reads what the earlier ones left in the run directory and skips finished work, so
rerunning a run resumes it. Model work (collection, records) holds the backend's model lock
(`saexplain.concurrency`), which methods take too.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.concurrency import model_lock
from saexplain.errors import ConfigError
from saexplain.methods.seeds import derive_seed
from saexplain.models import Explanation, LatentRecord, Score, Status, Usage
from saexplain.pipeline.resolve import Prepared
from saexplain.protocols import Explainer, MethodContext, Provider, Scorer
from saexplain.providers.build import LoggedProvider, current_latent, current_method
from saexplain.rundir import LatentEntry, RunDir, explanation_key, latent_key

if TYPE_CHECKING:
    from saexplain.report.results import RunResults
    from saexplain.store import ActivationStore

__all__ = [
    "build_run_records",
    "collect_store",
    "explain_and_score",
    "finish_report",
    "write_flags",
]

log = logging.getLogger("saexplain.pipeline")


# --- collect and build records --------------------------------------------------------------------


def collect_store(p: Prepared, *, progress: bool) -> ActivationStore:
    """The run's activation store, collected (or resumed) over the dataset."""
    from saexplain.store import collect

    cfg = p.config
    path = Path(cfg.store_dir) if cfg.store_dir else p.run_dir.path / "store"
    with model_lock(p.backend):
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
    todo = [i for i in report.latents if latent_key(builder.ref(i)) not in stored]
    bar = _bar(progress, len(todo), "records")
    with model_lock(p.backend):  # the builder tokenizes and may run the model (hard negatives)
        for index in report.latents:
            key = latent_key(builder.ref(index))
            if key in stored:
                records.append(stored[key])
                continue
            outcome = builder.build(index)
            p.run_dir.latents.append(
                LatentEntry(
                    latent=outcome.latent,
                    status=outcome.status,
                    reason=outcome.message,
                    count=outcome.count,
                    n_windows=outcome.n_windows,
                    stats=None if outcome.record is None else outcome.record.stats,
                )
            )
            if outcome.record is not None:
                p.run_dir.records.append(outcome.record)
                records.append(outcome.record)
            bar.update(1)
    bar.close()
    return records


# --- explain and score ----------------------------------------------------------------------------


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


def _bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm progress bar, or one that shows nothing."""
    if not enabled or total == 0:
        return _NoBar()
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
    pending = sum((latent_key(r.latent), e) not in done_e for r in records for e in p.explainers)
    pending += sum(
        (latent_key(r.latent), e, s) not in done_s
        for r in records
        for e in p.explainers
        for s in p.scorers
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
        key = (latent_key(record.latent), name)
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
        key = (latent_key(record.latent), explanation.explainer, name)
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


# --- flags and report -----------------------------------------------------------------------------


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


def finish_report(run_dir: RunDir) -> RunResults:
    """Load the run's results and write its HTML report."""
    from saexplain.report import RunResults, write_report

    results = RunResults.load(run_dir.path)
    write_report(run_dir.path, results=results)
    return results
