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
    CollectingExecutor,
    Explainer,
    MethodCalls,
    MethodContext,
    PromptWording,
    Provider,
    RecordsSettings,
    Scorer,
    needs_of,
)
from saexplain.providers.build import LoggedProvider, current_latent, current_method
from saexplain.providers.wrap import run_ledger
from saexplain.rundir import (
    SKIPPED_GENERIC,
    JsonlLog,
    LatentEntry,
    MethodIdentity,
    MethodIds,
    RunDir,
    control_name,
    control_of,
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
    "prompt_wordings",
    "shuffled_derangement",
    "store_path",
    "store_settings",
    "write_flags",
]

log = logging.getLogger("saexplain.pipeline")


# --- collect and build records --------------------------------------------------------------------


def store_path(p: Prepared) -> Path:
    """The run's activation store: `store_dir`, else `<run dir>/store`."""
    return Path(p.config.store_dir) if p.config.store_dir else p.run_dir.path / "store"


def store_settings(p: Prepared) -> dict[str, Any]:
    """The collection settings of the run (`collection_settings` keywords): the same in this
    process and in an executor's workers, so they fill one store."""
    cfg = p.config
    return {
        "context_length": cfg.context_length,
        "n_tokens": cfg.n_tokens,
        "batch_size": cfg.batch_size,
        "prepend_bos": cfg.prepend_bos,
        "text_field": cfg.text_field,
        "split": cfg.split,
        "seed": cfg.seed,
    }


def collect_store(
    p: Prepared, *, progress: bool, executor: object | None = None
) -> ActivationStore:
    """The run's activation store, collected (or resumed) over the dataset: every coder of the
    run in one forward pass per batch (the backend stops at the deepest coder's hook).

    An `executor` that can (`CollectingExecutor`) collects it elsewhere first (the Ray
    executor: slices of the token stream on its workers); the store is then complete, and the
    in-process `collect` below only checks it and computes its statistics."""
    from saexplain.store import collect

    cfg = p.config
    path = store_path(p)
    log.info(
        "collecting %d tokens in contexts of %d into %s (finished shards are kept)",
        cfg.n_tokens,
        cfg.context_length,
        path,
    )
    if isinstance(executor, CollectingExecutor):
        executor.collect(p, path, progress=progress)
    with model_lock(p.backend):
        store = collect(
            p.backend,
            p.coders,
            p.dataset,
            path,
            **store_settings(p),
            progress=progress,
            resume=True,
        )
    log.info("collected %d tokens in %d contexts", store.n_tokens, store.n_contexts)
    # a dataset shorter than n_tokens collects less: the manifest says how much (and the log)
    tokens = {"requested": cfg.n_tokens, "collected": store.n_tokens}
    p.run_dir.write_json("manifest", {**(p.run_dir.read_json("manifest") or {}), "tokens": tokens})
    return store


def build_run_records(p: Prepared, store: ActivationStore, *, progress: bool) -> list[LatentRecord]:
    """Records of the selected latents of every coder, coder by coder; reuses those a previous
    attempt wrote."""
    from saexplain.sampling import RecordBuilder, select_latents

    stored = p.run_dir.stored_records()
    records: list[LatentRecord] = []
    selected = dead = 0
    for coder in p.coders:
        report = select_latents(
            store,
            p.selection(coder),
            coder_id=coder.id,
            seed=p.config.seed,
            rare_below=p.record_config.rare_below,
        )
        selected, dead = selected + len(report.latents), dead + len(report.dead)
        log.info(
            "records of %s: %d latents selected, %d dead, %d rare",
            coder.id,
            len(report.latents),
            len(report.dead),
            len(report.rare),
        )
        builder = RecordBuilder(store, p.backend, p.record_config, coder_id=coder.id)
        kept, found = _filter_latents(p, store, coder, builder, report.latents, stored)
        records += _coder_records(p, builder, kept, stored, progress=progress, filters=found)
    if selected == dead:
        raise ConfigError(
            f"no alive latents in the selection ({selected} selected, {dead} never fired over "
            f"{store.n_tokens} tokens): select other latents or collect more tokens"
        )
    return records


def _filter_latents(
    p: Prepared,
    store: ActivationStore,
    coder: Any,
    builder: Any,
    latents: Sequence[int],
    stored: Mapping[Any, LatentRecord],
) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """The latents to build records for, and each latent's filter findings (`filters:` in the
    config; none without it). Skipped latents get a `filtered` line in latents.jsonl, and their
    count is logged here, before any LLM call."""
    if p.config.filters is None:
        return list(latents), {}
    from saexplain.analysis.filters import FilterConfig, compute_filters, skipped

    cfg = FilterConfig.parse(p.config.filters)
    with model_lock(p.backend):  # the unigram check runs the model
        found = compute_filters(
            store,
            latents,
            cfg,
            coder_id=coder.id,
            backend=p.backend,
            coder=coder,
            seed=p.config.seed,
        )
    skip = skipped(found, cfg.skip)
    for index, flags in skip.items():
        if latent_key(builder.ref(index)) not in stored:  # an earlier attempt's record stays
            p.run_dir.latents.append(
                LatentEntry(
                    latent=builder.ref(index),
                    status="filtered",
                    reason="skipped by the filters: " + ", ".join(flags),
                    count=found[index].count,
                    filters=found[index].to_json(),
                )
            )
    counts = {
        f: sum(f in v.flags for v in found.values())
        for f in ("dead", "rare", "positional", "unigram")
    }
    log.info(
        "filters of %s: %s; %d of %d latents skipped before any LLM call (skip: %s)",
        coder.id,
        ", ".join(f"{n} {f}" for f, n in counts.items()),
        len(skip),
        len(found),
        ", ".join(cfg.skip) or "nothing",
    )
    kept = [i for i in latents if i not in skip or latent_key(builder.ref(i)) in stored]
    return kept, {i: f.to_json() for i, f in found.items()}


def _coder_records(
    p: Prepared,
    builder: Any,
    latents: Sequence[int],
    stored: Mapping[Any, LatentRecord],
    *,
    progress: bool,
    filters: Mapping[int, dict[str, Any]] | None = None,
) -> list[LatentRecord]:
    """One coder's records of `latents` (a `RecordBuilder` for that coder), stored ones reused."""
    records: list[LatentRecord] = []
    todo = [i for i in latents if latent_key(builder.ref(i)) not in stored]
    bar = _bar(progress, len(todo), "records")
    with model_lock(p.backend):  # the builder tokenizes and may run the model (hard negatives)
        for index in latents:
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
                    filters=(filters or {}).get(index),
                )
            )
            if outcome.record is not None:
                p.run_dir.records.append(outcome.record)
                records.append(outcome.record)
            bar.update(1)
    bar.close()
    reused = len(latents) - len(todo)
    log.info(
        "records: %d built, %d reused from an earlier attempt, %d latents without one",
        len(records) - reused,
        reused,
        len(latents) - len(records),
    )
    return records


def bare_records(p: Prepared) -> list[LatentRecord]:
    """Records holding only the latent (no examples, zero statistics), for a run whose methods
    read no records: nothing is collected, so every selected latent is explained, fired or not.

    For each coder, the latents are its selection's indices or range; `sample` draws that many
    of them (of all the coder's latents without a range) uniformly, with the run's seed, since
    no statistics say which fire. A frequency band was refused when the run was prepared
    (`check_latents`)."""
    no_data = LatentStats(n_tokens=0, count=0)
    records: list[LatentRecord] = []
    for coder in p.coders:
        selection = p.selection(coder)
        if selection.indices is not None:
            candidates = np.unique(np.asarray(selection.indices, dtype=np.int64))
        else:
            stop = int(coder.d_sae) if selection.stop is None else selection.stop
            candidates = np.arange(selection.start or 0, stop, dtype=np.int64)
        if selection.sample is not None and selection.sample < len(candidates):
            # the purpose select_latents draws with: the same seed stream, another pool
            rng = np.random.default_rng(derive_seed(p.config.seed, coder.id, "select"))
            candidates = np.sort(rng.choice(candidates, size=selection.sample, replace=False))
        records += [
            LatentRecord(
                latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=int(i)), stats=no_data
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

    explainers = {
        n: _identity(n, m, given.get(n, {}), llm(m, "explainer")) for n, m in p.explainers.items()
    }
    if p.config.shuffled_controls:
        # a control is identified by its explainer's configuration and the derangement's seed
        for n, e in list(explainers.items()):
            c = control_name(n)
            settings = {"shuffled": e.id, "seed": p.config.seed}
            explainers[c] = MethodIdentity(id=method_id(c, settings, e.llm), llm=e.llm)
    return MethodIds(
        explainers=explainers,
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


def shuffled_derangement(keys: Sequence[str], seed: int, explainer: str) -> dict[str, str]:
    """A derangement of `keys` (latent keys), as {latent: the latent whose explanation it gets}.

    The keys are ordered by a seeded hash of each key alone and each is given its successor in
    that cycle, so no key maps to itself, the same keys always give the same map (whatever their
    order), and adding or losing one latent changes the partners of its two neighbours only.
    Empty for fewer than two keys: there is no other latent to borrow from."""
    order = sorted(set(keys), key=lambda k: (derive_seed(seed, explainer, "shuffled", k), k))
    if len(order) < 2:
        return {}
    return {k: order[(i + 1) % len(order)] for i, k in enumerate(order)}


def prompt_wordings(explainers: Mapping[str, Explainer]) -> dict[str, str]:
    """The prompt wording of each explainer that has one (`PromptWording`): the echo check."""
    return {n: e.prompt_wording() for n, e in explainers.items() if isinstance(e, PromptWording)}


def _control_key(ref: LatentRef) -> str:
    return f"{ref.coder_id}/{ref.key}"


async def explain_and_score(
    p: Prepared,
    records: Sequence[LatentRecord],
    store: object,
    *,
    progress: bool,
    calls: MethodCalls | None = None,
) -> None:
    """Every pending (latent, explainer) and (latent, explainer, scorer) pair, concurrently.

    A pair is pending unless the run holds a final result of the method's current configuration
    (`method_ids`). Each result is written the moment it exists, inside the same guard as the
    method: a crash, or a result that cannot be written, becomes an `error` result.

    Without `shuffled_controls` and `skip_generic` each latent is scored as soon as it is
    explained. With either, the run goes in phases, since both need every explanation first:
    explain all, flag generic explanations (`flags.json`), then score all, the true explanations
    (those flagged skipped under `skip_generic`) and the shuffled controls together.

    `calls` (an executor's, `saexplain.protocols.Executor`) runs each method call elsewhere;
    everything else, writing included, stays here. None: the methods run in this process.
    """
    providers: Mapping[str, Provider] = p.providers
    if p.config.log_prompts:
        providers = {r: LoggedProvider(v, p.run_dir) for r, v in providers.items()}
    ids = method_ids(p)
    done_e = p.run_dir.done_explanations()
    latest_s = p.run_dir.latest_scores()
    done_s = p.run_dir.done_scores()
    phased = p.config.shuffled_controls or p.config.skip_generic

    def e_key(record: LatentRecord, name: str) -> tuple[Any, ...]:
        return (latent_key(record.latent), name, ids.explainers[name].id)

    def s_key(record: LatentRecord, explainer: str, name: str) -> tuple[Any, ...]:
        return (latent_key(record.latent), explainer, name, ids.score_id(explainer, name))

    pending_e = sum(e_key(r, e) not in done_e for r in records for e in p.explainers)
    pending_s = sum(
        s_key(r, e, s) not in done_s for r in records for e in p.explainers for s in p.scorers
    )
    jobs = len(records) * len(p.explainers) * (1 + len(p.scorers))
    log.info(
        "explain and score: %d of %d jobs pending (%d latents; %s; %s)%s",
        pending_e + pending_s,
        jobs,
        len(records),
        ", ".join(p.explainers),
        ", ".join(p.scorers) or "no scorers",
        ", plus shuffled controls" if p.config.shuffled_controls else "",
    )
    bar = _bar(progress, pending_e if phased else pending_e + pending_s, "explain+score")
    spend = _Spend()
    sem = asyncio.Semaphore(p.config.concurrency)
    ledger = run_ledger(p.providers)

    def ctx_for(record: LatentRecord) -> MethodContext:
        if ledger is not None:  # called as a method starts: none starts once the cap is reached
            ledger.check_cap()
        return MethodContext(
            backend=p.backend,
            coder=p.coder_for(record.latent.coder_id),  # the record's own coder
            providers=providers,
            store=store,
            seed=derive_seed(p.config.seed, record.latent.key),
            work_dir=p.run_dir.path / "cache",
        )

    async def explain_call(name: str, explainer: Explainer, record: LatentRecord) -> Explanation:
        if calls is None:
            return await explainer.explain(record, ctx_for(record))
        if ledger is not None:  # as ctx_for: no call starts once the cap is reached
            ledger.check_cap()
        return await calls.explain(name, record)

    async def score_call(
        name: str, scorer: Scorer, record: LatentRecord, explanation: Explanation
    ) -> Score:
        if calls is None:
            return await scorer.score(record, explanation, ctx_for(record))
        if ledger is not None:
            ledger.check_cap()
        return await calls.score(name, record, explanation)

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
                sem, record.latent.key, name, lambda: explain_call(name, explainer, record)
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

    def score_pending(key: tuple[Any, ...], skip: str | None, redo: bool) -> bool:
        """Whether a score is to be made: not done, or done from what changed since (a control
        whose explanation was replaced; a skip line whose explanation is no longer skipped)."""
        done = done_s.get(key)
        if done is None or redo:
            return True
        return skip is None and (done.error or "").startswith(SKIPPED_GENERIC)

    async def score_one(
        record: LatentRecord,
        explanation: Explanation,
        name: str,
        scorer: Scorer,
        *,
        skip: str | None = None,
        redo: bool = False,
    ) -> None:
        key = s_key(record, explanation.explainer, name)
        if not score_pending(key, skip, redo):
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
            elif skip is not None:  # final: a rerun keeps it while the explanation stays flagged
                error = f"{SKIPPED_GENERIC} ({skip})"
                result = Score(latent=record.latent, status=Status.FAILED, error=error, **stamp)
            else:
                result = await _guarded(
                    sem,
                    record.latent.key,
                    f"{explanation.explainer}/{name}",
                    lambda: score_call(name, scorer, record, explanation),
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

    def controls(
        explained: Mapping[tuple[str, str], Explanation], skipped: Mapping[tuple[str, str], str]
    ) -> list[tuple[LatentRecord, Explanation, bool]]:
        """Each explainer's shuffled controls (record, control, whether written anew): a
        control is reused while it still holds the text its derangement partner has now."""
        out = []
        by_key = {_control_key(r.latent): r for r in records}
        for name in p.explainers:
            ok = [
                k
                for k in by_key
                if (k, name) in explained
                and explained[k, name].status is Status.OK
                and (k, name) not in skipped
            ]
            partner = shuffled_derangement(ok, p.config.seed, name)
            if len(ok) == 1:
                log.warning("%s: one latent explained, so it has no shuffled control", name)
            c = control_name(name)
            for k, source_key in partner.items():
                record, source = by_key[k], explained[source_key, name]
                old = done_e.get(e_key(record, c))
                evidence = {"shuffled_from": source.latent.key}
                if old is not None and old.evidence == evidence and old.text == source.text:
                    out.append((record, old, False))
                    continue
                control = Explanation(
                    latent=record.latent,
                    text=source.text,
                    explainer=c,
                    evidence=dict(evidence),
                    method_id=ids.explainers[c].id,
                    llm=ids.explainers[c].llm,
                )
                p.run_dir.explanations.write_line(p.run_dir.explanations.encode(control))
                out.append((record, control, True))
        return out

    async def in_phases() -> None:
        nonlocal bar
        explained: dict[tuple[str, str], Explanation] = {}

        async def explain_keyed(record: LatentRecord, name: str, explainer: Explainer) -> None:
            result = await explain_one(record, name, explainer)
            explained[_control_key(record.latent), name] = result

        await asyncio.gather(
            *(explain_keyed(r, n, e) for r in records for n, e in p.explainers.items())
        )
        bar.close()
        skipped: dict[tuple[str, str], str] = {}
        if p.config.skip_generic:
            generic = write_flags(p.run_dir, prompts=prompt_wordings(p.explainers))["generic"]
            for name, flagged in generic.items():
                for entry in flagged:
                    skipped[f"{entry['coder']}/{entry['latent']}", name] = entry["reason"]
            log.info("skip_generic: %d generic explanations are not scored", len(skipped))
        made = controls(explained, skipped) if p.config.shuffled_controls else []
        work = [
            (r, explained[_control_key(r.latent), n], s, skipped.get((_control_key(r.latent), n)))
            for r in records
            for n in p.explainers
            for s in p.scorers
        ]
        todo = [
            score_one(r, ex, s, p.scorers[s], skip=skip)
            for r, ex, s, skip in work
            if score_pending(s_key(r, ex.explainer, s), skip, False)
        ]
        todo += [
            score_one(r, ex, s, scorer, redo=new)
            for r, ex, new in made
            for s, scorer in p.scorers.items()
            if score_pending(s_key(r, ex.explainer, s), None, new)
        ]
        bar = _bar(progress, len(todo), "score")
        await asyncio.gather(*todo)

    try:
        if phased:
            await in_phases()
        else:
            await asyncio.gather(*(one_latent(r) for r in records))
        log.info("explain and score finished: %s", spend.text())
    except Interrupted:
        for _ in range(p.config.concurrency):  # holding every slot: no job is running any more
            await sem.acquire()
        raise
    finally:
        bar.close()


# --- flags and report -----------------------------------------------------------------------------


def write_flags(run_dir: RunDir, *, prompts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flag answers an explainer gave for many latents alike or nearly alike ("en", "a word",
    "names of months" / "month names"), and answers repeating the explainer's own prompt
    (`prompts`, by explainer: `prompt_wordings`): they say nothing about any one latent (see
    `saexplain.methods.generic`); and scores whose scorer gave one answer to every item (see
    `_constant`). Written to `flags.json`; the results themselves stay untouched (unless the
    run's `skip_generic` skips scoring the generic ones)."""
    from saexplain.methods.generic import generic_reasons

    ids = run_dir.method_ids()
    # the last explanation per (latent, explainer) of the current configuration; the shuffled
    # controls repeat other latents' answers on purpose, so they are not checked
    latest = {
        (latent_key(e.latent), e.explainer): e
        for e in run_dir.explanations.read(Explanation)
        if (ids is None or ids.is_current(e)) and control_of(e.explainer) is None
    }
    by_explainer: dict[str, list[Explanation]] = {}
    for e in latest.values():
        by_explainer.setdefault(e.explainer, []).append(e)
    generic: dict[str, list[dict[str, str]]] = {}
    for name, explanations in sorted(by_explainer.items()):
        prompt = (prompts or {}).get(name)
        reasons = generic_reasons(explanations, prompt=prompt)
        flagged = [
            {"latent": e.latent.key, "coder": e.latent.coder_id, "text": e.text, "reason": r}
            for e, r in zip(explanations, reasons, strict=True)
            if r is not None
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
