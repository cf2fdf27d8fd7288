"""Running a prepared run, stage by stage: collect -> records -> explain + score -> flags -> report.

Each stage reads what the earlier ones left in the run directory and skips finished work, so
rerunning a run resumes it. Model work (collection, records) holds the backend's model lock
(`saexplain.concurrency`), which methods take too. A run whose methods read no records
(`Prepared.collects` false: selfexplain, vocabproj) skips collection: `bare_records` gives each
selected latent a record holding only the latent.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saexplain.concurrency import model_lock
from saexplain.errors import ConfigError, SpendCapReached
from saexplain.interrupts import Interrupted, check_interrupt
from saexplain.methods.seeds import derive_seed
from saexplain.models import (
    Explanation,
    LatentRecord,
    LatentRef,
    LatentStats,
    Score,
    Status,
    Usage,
)
from saexplain.pipeline.resolve import Prepared
from saexplain.protocols import (
    Explainer,
    MethodContext,
    Provider,
    RecordsSettings,
    Scorer,
    needs_of,
)
from saexplain.providers.build import LoggedProvider, current_latent, current_method
from saexplain.providers.wrap import run_ledger
from saexplain.rundir import (
    JsonlLog,
    LatentEntry,
    MethodIdentity,
    MethodIds,
    RunDir,
    latent_key,
    method_id,
)

if TYPE_CHECKING:
    from saexplain.report.results import RunResults
    from saexplain.store import ActivationStore

__all__ = [
    "bare_records",
    "build_run_records",
    "collect_store",
    "explain_and_score",
    "finish_report",
    "method_ids",
    "write_flags",
]

log = logging.getLogger("saexplain.pipeline")


# --- collect and build records --------------------------------------------------------------------


def collect_store(p: Prepared, *, progress: bool) -> ActivationStore:
    """The run's activation store, collected (or resumed) over the dataset."""
    from saexplain.store import collect

    cfg = p.config
    path = Path(cfg.store_dir) if cfg.store_dir else p.run_dir.path / "store"
    log.info(
        "collecting %d tokens in contexts of %d into %s (finished shards are kept)",
        cfg.n_tokens,
        cfg.context_length,
        path,
    )
    with model_lock(p.backend):
        store = collect(
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
    log.info("collected %d tokens in %d contexts", store.n_tokens, store.n_contexts)
    # a dataset shorter than n_tokens collects less: the manifest says how much (and the log)
    tokens = {"requested": cfg.n_tokens, "collected": store.n_tokens}
    p.run_dir.write_json("manifest", {**(p.run_dir.read_json("manifest") or {}), "tokens": tokens})
    return store


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
    log.info(
        "records: %d latents selected, %d dead, %d rare",
        len(report.latents),
        len(report.dead),
        len(report.rare),
    )
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
            check_interrupt()  # Ctrl-C stops between records; those written are kept
            outcome = builder.build(index)
            if outcome.record is None:
                log.debug("latent %d skipped (%s): %s", index, outcome.status, outcome.message)
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
    reused = len(report.latents) - len(todo)
    log.info(
        "records: %d built, %d reused from an earlier attempt, %d latents without one",
        len(records) - reused,
        reused,
        len(report.latents) - len(records),
    )
    return records


def bare_records(p: Prepared) -> list[LatentRecord]:
    """Records holding only the latent (no examples, zero statistics), for a run whose methods
    read no records: nothing is collected, so every selected latent is explained, fired or not.

    The latents are the selection's indices or range; `sample` draws that many of them (of all
    the coder's latents without a range) uniformly, with the run's seed, since no statistics say
    which fire. A frequency band was refused when the run was prepared (`check_latents`)."""
    selection = p.config.latents
    if selection.indices is not None:
        candidates = np.unique(np.asarray(selection.indices, dtype=np.int64))
    else:
        stop = int(p.coder.d_sae) if selection.stop is None else selection.stop
        candidates = np.arange(selection.start or 0, stop, dtype=np.int64)
    if selection.sample is not None and selection.sample < len(candidates):
        # the purpose select_latents draws with: the same seed stream, another pool (all latents)
        rng = np.random.default_rng(derive_seed(p.config.seed, p.coder.id, "select"))
        candidates = np.sort(rng.choice(candidates, size=selection.sample, replace=False))
    no_data = LatentStats(n_tokens=0, count=0)
    records = [
        LatentRecord(
            latent=LatentRef(coder_id=p.coder.id, hook=p.coder.hook, index=int(i)), stats=no_data
        )
        for i in candidates
    ]
    log.info(
        "records: no chosen method reads records, so nothing is collected; %d latents selected",
        len(records),
    )
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


def _writable(text: str) -> str:
    """`text` with what UTF-8 cannot encode (lone surrogates) replaced, so it can be written."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _error_result(make: Callable[..., Any], exc: BaseException, **fields: Any) -> Any:
    message = _writable(f"{type(exc).__name__}: {exc}"[:2000])
    if not isinstance(exc, SpendCapReached):  # the run's ledger warns once, not once per pair
        log.warning("%s failed: %s", fields.get("latent"), message)
    return make(status=Status.ERROR, error=message, **fields)


# --- method identity ------------------------------------------------------------------------------


def _llm(providers: Mapping[str, Provider], role: str) -> str | None:
    """The LLM serving `role` as "<provider>:<model>", None when the run has none for it."""
    try:
        provider = MethodContext(providers=providers).provider(role)
    except LookupError:
        return None
    return f"{provider.name}:{provider.model}"


def _identity(
    name: str, method: object, configured: Mapping[str, Any], llm: str | None
) -> MethodIdentity:
    # the settings the method records (resolved, prompt versions included); a method that
    # records none is identified by the settings the config gives it
    settings = method.recorded_settings() if isinstance(method, RecordsSettings) else configured
    return MethodIdentity(id=method_id(name, settings, llm), llm=llm)


def method_ids(p: Prepared) -> MethodIds:
    """The configuration id of each of the run's methods: results are keyed by it, so a rerun
    with another model, prompt version or setting makes new results instead of relabelling."""
    given = {s.name: s.settings for s in (*p.config.explainers, *p.config.scorers)}

    def llm(method: object, role: str) -> str | None:
        return _llm(p.providers, role) if needs_of(method).provider else None

    return MethodIds(
        explainers={
            n: _identity(n, m, given.get(n, {}), llm(m, "explainer"))
            for n, m in p.explainers.items()
        },
        scorers={
            n: _identity(n, m, given.get(n, {}), llm(m, "scorer")) for n, m in p.scorers.items()
        },
    )


async def _guarded(
    sem: asyncio.Semaphore, latent_key: str, method: str, work: Callable[[], Awaitable[Any]]
) -> Any:
    async with sem:
        check_interrupt()  # Ctrl-C: no new job starts; running ones finish and are saved
        current_latent.set(latent_key)
        current_method.set(method)
        return await work()


def _encoded(log: JsonlLog, result: Explanation | Score) -> bytes:
    """The result's line, or `ValueError` when it cannot be written (a lone surrogate in its
    text): checked inside the method's guard, so the result becomes an error, not a crash."""
    try:
        return log.encode(result)
    except Exception as e:  # pydantic's serialisation error or UnicodeEncodeError
        raise ValueError(f"the result cannot be written: {type(e).__name__}: {e}") from e


async def explain_and_score(
    p: Prepared, records: Sequence[LatentRecord], store: object, *, progress: bool
) -> None:
    """Every pending (latent, explainer) and (latent, explainer, scorer) pair, concurrently.

    A pair is pending unless the run holds a final result of the method's current configuration
    (`method_ids`). Each result is written the moment it exists, inside the same guard as the
    method: a crash, or a result that cannot be written, becomes an `error` result.
    """
    providers: Mapping[str, Provider] = p.providers
    if p.config.log_prompts:
        providers = {r: LoggedProvider(v, p.run_dir) for r, v in providers.items()}
    ids = method_ids(p)
    done_e = p.run_dir.done_explanations()
    latest_s = p.run_dir.latest_scores()
    done_s = p.run_dir.done_scores()

    def e_key(record: LatentRecord, name: str) -> tuple[Any, ...]:
        return (latent_key(record.latent), name, ids.explainers[name].id)

    def s_key(record: LatentRecord, explainer: str, name: str) -> tuple[Any, ...]:
        return (latent_key(record.latent), explainer, name, ids.score_id(explainer, name))

    pending = sum(e_key(r, e) not in done_e for r in records for e in p.explainers)
    pending += sum(
        s_key(r, e, s) not in done_s for r in records for e in p.explainers for s in p.scorers
    )
    jobs = len(records) * len(p.explainers) * (1 + len(p.scorers))
    log.info(
        "explain and score: %d of %d jobs pending (%d latents; %s; %s)",
        pending,
        jobs,
        len(records),
        ", ".join(p.explainers),
        ", ".join(p.scorers) or "no scorers",
    )
    bar = _bar(progress, pending, "explain+score")
    spend = _Spend()
    sem = asyncio.Semaphore(p.config.concurrency)
    ledger = run_ledger(p.providers)

    def ctx_for(record: LatentRecord) -> MethodContext:
        if ledger is not None:  # called as a method starts: none starts once the cap is reached
            ledger.check_cap()
        return MethodContext(
            backend=p.backend,
            coder=p.coder,
            providers=providers,
            store=store,
            seed=derive_seed(p.config.seed, record.latent.key),
            work_dir=p.run_dir.path / "cache",
        )

    def finished(result: Explanation | Score) -> None:
        spend.add(result)
        bar.update(1)
        bar.set_postfix_str(spend.text())

    async def explain_one(record: LatentRecord, name: str, explainer: Explainer) -> Explanation:
        key = e_key(record, name)
        if key in done_e:
            return done_e[key]
        # keyed by the run's name (a registered alias may call itself otherwise), with the
        # configuration that made it
        stamp = {"explainer": name, "method_id": key[2], "llm": ids.explainers[name].llm}
        try:
            result: Explanation = await _guarded(
                sem, record.latent.key, name, lambda: explainer.explain(record, ctx_for(record))
            )
            result = result.model_copy(update=stamp)
            line = _encoded(p.run_dir.explanations, result)
        except (asyncio.CancelledError, KeyboardInterrupt, Interrupted):
            raise
        except Exception as e:  # one method's crash never takes the run down
            result = _error_result(Explanation, e, latent=record.latent, **stamp)
            line = p.run_dir.explanations.encode(result)
        p.run_dir.explanations.write_line(line)
        finished(result)
        return result

    async def score_one(
        record: LatentRecord, explanation: Explanation, name: str, scorer: Scorer
    ) -> None:
        key = s_key(record, explanation.explainer, name)
        if key in done_s:
            return
        stamp = {
            "scorer": name,
            "explainer": explanation.explainer,
            "method_id": key[3],
            "llm": ids.scorers[name].llm,
        }
        try:
            if explanation.status != Status.OK:
                result = Score(
                    latent=record.latent,
                    status=Status.ERROR,
                    error=_writable(
                        f"explanation not available ({explanation.status}): {explanation.error}"
                    ),
                    **stamp,
                )
            else:
                result = await _guarded(
                    sem,
                    record.latent.key,
                    f"{explanation.explainer}/{name}",
                    lambda: scorer.score(record, explanation, ctx_for(record)),
                )
                result = result.model_copy(update=stamp)
            line = _encoded(p.run_dir.scores, result)
        except (asyncio.CancelledError, KeyboardInterrupt, Interrupted):
            raise
        except Exception as e:
            result = _error_result(Score, e, latent=record.latent, **stamp)
            line = p.run_dir.scores.encode(result)
        earlier = latest_s.get(key)
        if result.status is Status.ERROR and earlier is not None and earlier.partial:
            # a partial score says more than an error: it stays until a retry does better
            if SpendCapReached.__name__ not in (result.error or ""):  # the ledger warned once
                log.warning("%s: retrying a partial score failed again: %s", key, result.error)
        else:
            p.run_dir.scores.write_line(line)
        finished(result)

    async def one_latent(record: LatentRecord) -> None:
        explanations = await asyncio.gather(
            *(explain_one(record, n, e) for n, e in p.explainers.items())
        )
        await asyncio.gather(
            *(score_one(record, ex, n, s) for ex in explanations for n, s in p.scorers.items())
        )

    try:
        await asyncio.gather(*(one_latent(r) for r in records))
        log.info("explain and score finished: %s", spend.text())
    except Interrupted:
        for _ in range(p.config.concurrency):  # holding every slot: no job is running any more
            await sem.acquire()
        raise
    finally:
        bar.close()


# --- flags and report -----------------------------------------------------------------------------


def write_flags(run_dir: RunDir) -> dict[str, Any]:
    """Flag answers an explainer gave for many latents alike ("en", "a word"): they say nothing
    about any one latent; and scores whose scorer gave one answer to every item (see `_constant`).
    Written to `flags.json`; the results themselves stay untouched."""
    from saexplain.explainers.selfexplain import flag_generic

    ids = run_dir.method_ids()
    # the last explanation per (latent, explainer) of the current configuration
    latest = {
        (latent_key(e.latent), e.explainer): e
        for e in run_dir.explanations.read(Explanation)
        if ids is None or ids.is_current(e)
    }
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
    flags: dict[str, Any] = {"generic": generic, "constant_predictions": _constant(run_dir, ids)}
    run_dir.write_json("flags", flags)
    return flags


def _constant(run_dir: RunDir, ids: MethodIds | None) -> dict[str, list[dict[str, str]]]:
    """Per scorer, the scores whose answers were all alike (`evidence["constant_predictions"]`):
    why a balanced accuracy reads 0.5 (a scorer model answering "yes" to everything)."""
    latest = {
        (latent_key(s.latent), s.explainer, s.scorer): s
        for s in run_dir.scores.read(Score)
        if ids is None or ids.is_current(s)
    }
    out: dict[str, list[dict[str, str]]] = {}
    for s in latest.values():
        answer = s.evidence.get("constant_predictions")
        if s.status is Status.OK and isinstance(answer, str):
            entry = {"latent": s.latent.key, "explainer": s.explainer, "answer": answer}
            out.setdefault(s.scorer, []).append(entry)
    for name, flagged in out.items():
        log.warning(
            "%s gave one answer to every item in %d scores (see flags.json)", name, len(flagged)
        )
    return dict(sorted(out.items()))


def finish_report(run_dir: RunDir) -> RunResults:
    """Load the run's results and write its HTML report."""
    from saexplain.report import RunResults, write_report

    results = RunResults.load(run_dir.path)
    write_report(run_dir.path, results=results)
    log.info("report written: %s", run_dir.path / "report.html")
    return results
