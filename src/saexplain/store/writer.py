"""Collection: stream contexts through a backend once, for one or several coders, into shards.

Layout of a store directory::

    manifest.json                 settings + the list of complete shards (the commit point)
    shards/00000/tokens.npy       (n_contexts, context_length) token ids, stored once
    shards/00000/<coder>.offsets.npy  (d_sae + 1,) int64: latent l's entries are [off[l], off[l+1])
    shards/00000/<coder>.index.npy    uint32 token index inside the shard (row * ctx + pos)
    shards/00000/<coder>.values.npy   float16 (or float32) activation values
    coders/<coder>/W_dec.npy      decoder directions (for neighbour negatives), when available
    stats/<coder>.npz             per-latent count, sum, max, quantile edges (after collection)

(A store collected in slices by several processes names its shards after the slices:
`shards/s<first context>-<n>/`; see `saexplain.store.slices`.)

Within a shard, entries are sorted by latent and then by token index, so one latent's
activations are a contiguous slice of every shard: reading it never scans other latents.
Each shard is written into a temporary directory and renamed into place, then the manifest is
replaced atomically. A run killed at any moment resumes from the last shard the manifest lists:
contexts are re-derived deterministically from the dataset and the already stored ones skipped.
Every file's checksum is computed as it is written and recorded in the manifest; a resumed run
collects again from the first shard with a missing file (deleted because a reader found it
corrupt), and recomputes deleted statistics.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from saexplain.errors import ConfigError, EmptyDatasetError
from saexplain.interrupts import check_interrupt
from saexplain.protocols import Backend, SparseCoder, TokenBatch
from saexplain.store._io import publish_dir, safe_key, save_npy, to_numpy
from saexplain.store.datasets import ContextStream, describe_dataset
from saexplain.store.manifest import (
    CoderInfo,
    CollectionSettings,
    Manifest,
    ShardInfo,
    saexplain_version,
)
from saexplain.store.reader import ActivationStore

FLOAT16_MAX = float(np.finfo(np.float16).max)

log = logging.getLogger("saexplain.store")


def _coder_infos(coders: Sequence[SparseCoder], save_decoder: bool) -> tuple[CoderInfo, ...]:
    ids = [c.id for c in coders]
    if not coders:
        raise ConfigError("collect needs at least one coder")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"coder ids must be unique; repeated: {dupes}")
    return tuple(
        CoderInfo(
            id=c.id,
            key=safe_key(c.id),
            hook=c.hook,
            d_in=int(c.d_in),
            d_sae=int(c.d_sae),
            exclude_bos=bool(c.exclude_bos),
            has_decoder=save_decoder,
        )
        for c in coders
    )


def _bos_policy(prepend_bos: bool, doc_separator: bool, context_length: int, pretok: bool) -> str:
    drop = "no activations kept at bos tokens for coders with exclude_bos"
    if pretok:
        return f"pre-tokenized contexts used as given; {drop}"
    head = (
        f"bos + {context_length - 1} tokens" if prepend_bos else f"{context_length} tokens, no bos"
    )
    sep = "documents separated by bos" if doc_separator else "documents concatenated"
    return f"{head}; {sep}; {drop}"


class CollectionProgress:
    """A tqdm bar in tokens (shows tokens/s), or nothing when disabled or tqdm is missing."""

    def __init__(self, enabled: bool, total: int | None, initial: int) -> None:
        self.bar: Any = None
        if enabled:
            try:
                tqdm: Any = importlib.import_module("tqdm.auto").tqdm
            except ImportError:  # pragma: no cover - tqdm is a core dependency
                return
            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="tok",
                unit_scale=True,
                desc="collect",
                dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def collect(
    backend: Backend,
    coders: SparseCoder | Sequence[SparseCoder],
    dataset: object,
    path: str | os.PathLike[str],
    *,
    context_length: int = 256,
    n_tokens: int | None = None,
    batch_size: int = 16,
    shard_contexts: int = 1024,
    prepend_bos: bool = True,
    doc_separator: bool = True,
    text_field: str = "text",
    split: str = "train",
    value_dtype: Literal["float16", "float32"] = "float16",
    seed: int = 0,
    save_decoder: bool = True,
    progress: bool = True,
    resume: bool = True,
    fsync: bool = True,
    compute_stats: bool = True,
    n_quantiles: int = 10,
) -> ActivationStore:
    """Collect sparse activations of `coders` over `dataset` into the store at `path`.

    `n_tokens` is the token budget (None: the whole dataset); it is rounded down to whole
    contexts. With `resume=True` an existing incomplete store with the same settings is
    continued; a complete one is returned as it is. Raises `EmptyDatasetError` for an empty
    dataset, one that tokenizes to nothing, or one shorter than one context.
    """
    coder_list = [coders] if isinstance(coders, SparseCoder) else list(coders)
    settings, stream = collection_settings(
        backend,
        coder_list,
        dataset,
        context_length=context_length,
        n_tokens=n_tokens,
        batch_size=batch_size,
        shard_contexts=shard_contexts,
        prepend_bos=prepend_bos,
        doc_separator=doc_separator,
        text_field=text_field,
        split=split,
        value_dtype=value_dtype,
        seed=seed,
        save_decoder=save_decoder,
    )
    root = Path(path)
    created = not (root / "manifest.json").exists()
    manifest = _open_or_create(root, settings, resume)
    if save_decoder:
        manifest = _save_decoders(root, coder_list, settings.coders, fsync, manifest)
    if not manifest.complete:
        try:
            manifest = _run(backend, coder_list, stream, root, manifest, progress, fsync)
        except BaseException:
            # leave no empty store behind a failed start (an empty dataset, a missing library)
            if created and not Manifest.load(root).shards:
                shutil.rmtree(root, ignore_errors=True)
            raise
    store = ActivationStore(root)
    if compute_stats and not manifest.stats_complete:
        from saexplain.store.stats import compute_all_stats

        compute_all_stats(store, n_quantiles=n_quantiles)
        store = ActivationStore(root)
    return store


def collection_settings(
    backend: Backend,
    coder_list: Sequence[SparseCoder],
    dataset: object,
    *,
    context_length: int = 256,
    n_tokens: int | None = None,
    batch_size: int = 16,
    shard_contexts: int = 1024,
    prepend_bos: bool = True,
    doc_separator: bool = True,
    text_field: str = "text",
    split: str = "train",
    value_dtype: Literal["float16", "float32"] = "float16",
    seed: int = 0,
    save_decoder: bool = True,
) -> tuple[CollectionSettings, ContextStream]:
    """The settings a collection records (and a resume must match), and the context stream it
    reads; bad settings raise `ConfigError` here. Shared by `collect` and the slices of a
    parallel collection (`saexplain.store.slices`), so both record the same settings."""
    if batch_size < 1 or shard_contexts < 1:
        raise ConfigError("batch_size and shard_contexts must be >= 1")
    if shard_contexts * context_length >= 2**32:
        raise ConfigError("shard_contexts * context_length must stay below 2**32")
    if n_tokens is not None and n_tokens < context_length:
        raise ConfigError(f"token budget {n_tokens} is smaller than one context ({context_length})")
    if value_dtype not in ("float16", "float32"):
        raise ConfigError(f"value_dtype must be float16 or float32, got {value_dtype!r}")
    for c in coder_list:
        if int(c.d_in) != int(backend.d_model):
            raise ConfigError(
                f"coder {c.id} reads width {c.d_in}, the model's width is {backend.d_model}"
            )
    stream = ContextStream(
        backend,
        dataset,
        context_length,
        prepend_bos=prepend_bos,
        doc_separator=doc_separator,
        text_field=text_field,
        split=split,
    )
    settings = CollectionSettings(
        model_id=backend.model_id,
        backend=backend.name,
        coders=_coder_infos(coder_list, save_decoder),
        dataset=describe_dataset(dataset, text_field=text_field, split=split),
        text_field=text_field,
        context_length=context_length,
        prepend_bos=prepend_bos,
        doc_separator=doc_separator,
        bos_token_id=backend.bos_token_id,
        bos_policy=_bos_policy(
            prepend_bos, doc_separator, context_length, stream.pretokenized_contexts
        ),
        token_budget=n_tokens,
        shard_contexts=shard_contexts,
        batch_size=batch_size,
        value_dtype=value_dtype,
        seed=seed,
    )
    return settings, stream


def _open_or_create(root: Path, settings: CollectionSettings, resume: bool) -> Manifest:
    if (root / "manifest.json").exists():
        if not resume:
            raise ConfigError(f"{root} already holds a store; pass resume=True or a new path")
        manifest = Manifest.load(root)
        if manifest.settings != settings:
            old, new = manifest.settings.model_dump(), settings.model_dump()
            diff = {k: (old[k], new[k]) for k in old if old[k] != new[k]}
            raise ConfigError(f"cannot resume {root}: settings differ (recorded, given): {diff}")
        return _drop_missing(root, manifest)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists, is not empty and holds no store")
    (root / "shards").mkdir(parents=True, exist_ok=True)
    manifest = Manifest(saexplain_version=saexplain_version(), settings=settings)
    manifest.save(root)
    return manifest


def _shard_files(settings: CollectionSettings) -> list[str]:
    """The files every shard holds."""
    kinds = ("offsets", "index", "values")
    return ["tokens.npy", *(f"{c.key}.{k}.npy" for c in settings.coders for k in kinds)]


def _drop_missing(root: Path, manifest: Manifest) -> Manifest:
    """Uncommit the first shard with a missing file and every shard after it (so they are
    collected again), and the statistics if one of their files is missing. Only file existence
    is checked here: a reader verifies checksums, and its error says to delete a corrupt file."""
    names = _shard_files(manifest.settings)
    keep = len(manifest.shards)
    for i, shard in enumerate(manifest.shards):
        folder = root / "shards" / shard.folder
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            what = f"lacks {missing[0]}" if folder.is_dir() else "is missing"
            after = len(manifest.shards) - i - 1
            again = f"it and the {after} shard(s) after it" if after else "it"
            warnings.warn(
                f"store shard {folder} {what}: collecting {again} again",
                UserWarning,
                stacklevel=4,  # the caller of collect
            )
            keep = i
            break
    stats = [f"stats/{c.key}.npz" for c in manifest.settings.coders]
    dropped = keep < len(manifest.shards)
    stats_lost = manifest.stats_complete and any(not (root / n).is_file() for n in stats)
    if not dropped and not stats_lost:
        return manifest
    if dropped:
        for name in stats:  # statistics that counted the shards now gone
            (root / name).unlink(missing_ok=True)
    repaired = manifest.model_copy(
        update={
            "shards": manifest.shards[:keep],
            "complete": manifest.complete and not dropped,
            "n_documents": None if dropped else manifest.n_documents,
            "stats_complete": False,
            "checksums": {n: v for n, v in manifest.checksums.items() if n not in stats},
        }
    )
    repaired.save(root)
    return repaired


def _save_decoders(
    root: Path,
    coders: Sequence[SparseCoder],
    infos: Sequence[CoderInfo],
    fsync: bool,
    manifest: Manifest,
) -> Manifest:
    """Save each coder's W_dec unless the manifest records it and it exists; return the manifest
    with the new files' checksums (saved here only if complete: otherwise with the next shard)."""
    from saexplain.store._io import atomic_save_npy

    checksums = dict(manifest.checksums)
    for coder, info in zip(coders, infos, strict=True):
        name = f"coders/{info.key}/W_dec.npy"
        target = root / name
        if target.exists() and name in checksums:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        w = to_numpy(coder.W_dec).astype(np.float32)
        if w.shape != (info.d_sae, info.d_in):
            raise ConfigError(
                f"coder {info.id}: W_dec shape {w.shape} != {(info.d_sae, info.d_in)}"
            )
        checksums[name] = atomic_save_npy(target, w, fsync=fsync)
    if checksums == manifest.checksums:
        return manifest
    manifest = manifest.model_copy(update={"checksums": checksums})
    if manifest.complete:
        manifest.save(root)
    return manifest


def _take(it: Iterator[npt.NDArray[np.int64]], n: int) -> list[npt.NDArray[np.int64]]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _skip(it: Iterator[npt.NDArray[np.int64]], n: int) -> int:
    skipped = 0
    for _ in range(n):
        if next(it, None) is None:
            break
        skipped += 1
    return skipped


def _run(
    backend: Backend,
    coders: Sequence[SparseCoder],
    stream: ContextStream,
    root: Path,
    manifest: Manifest,
    progress: bool,
    fsync: bool,
) -> Manifest:
    settings = manifest.settings
    ctx = settings.context_length
    budget = None if settings.token_budget is None else settings.token_budget // ctx
    done = manifest.n_contexts
    _clean_stale(root, {s.folder for s in manifest.shards})  # parked shards: collected again
    if manifest.parked:  # one process collects in order: parked slices are collected again
        manifest = manifest.model_copy(update={"parked": ()})
        manifest.save(root)
    contexts = iter(stream)
    skipped = _skip(contexts, done)
    if skipped < done:
        raise ConfigError(
            f"cannot resume {root}: the dataset now yields {skipped} contexts, "
            f"{done} were already stored"
        )
    bar = CollectionProgress(progress, None if budget is None else budget * ctx, done * ctx)
    # The next shard runs through the model while a writer thread merges, writes and commits
    # the previous one. Shards are still committed strictly in order: a shard is handed over
    # only once the one before it is in the manifest.
    state = {"manifest": manifest}

    def commit(
        tokens: npt.NDArray[np.int64], buffers: dict[str, _ShardBuffer], n: int, at: int
    ) -> None:
        shard = (tokens, {cid: buf.finish() for cid, buf in buffers.items()})
        info = _write_shard(root, n, at, shard, settings, fsync)
        current = state["manifest"]
        updated = current.model_copy(update={"shards": (*current.shards, info)})
        updated.save(root)
        state["manifest"] = updated

    number = len(manifest.shards)
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saexplain-writer") as writer:
        try:
            while budget is None or done < budget:
                want = (
                    settings.shard_contexts
                    if budget is None
                    else min(settings.shard_contexts, budget - done)
                )
                rows = _take(contexts, want)
                if not rows:
                    break
                tokens, buffers = _collect_shard(backend, coders, settings, np.stack(rows), bar)
                if pending is not None:
                    pending.result()
                pending = writer.submit(commit, tokens, buffers, number, done)
                number += 1
                done += len(rows)
                if len(rows) < want:
                    break
        finally:
            bar.close()
            if pending is not None:
                pending.result()
    manifest = state["manifest"]
    if done == 0:
        if stream.n_tokens_read:
            raise EmptyDatasetError(
                f"the dataset has {stream.n_tokens_read} tokens, shorter than one context "
                f"({ctx} tokens with the BOS policy: {settings.bos_policy})"
            )
        raise EmptyDatasetError("the dataset produced no contexts")
    manifest = manifest.model_copy(update={"complete": True, "n_documents": stream.n_docs or None})
    manifest.save(root)
    _log_collected(done, budget, ctx, stream.n_docs)
    return manifest


def _log_collected(done: int, budget: int | None, ctx: int, n_docs: int) -> None:
    """Say how many tokens were collected (`done` of `budget` contexts of `ctx` tokens); a
    warning when the dataset ran out first (the progress bar alone stops short without a word)."""
    if budget is not None and done < budget:
        log.warning(
            "the dataset ended after %d of the %d tokens requested (n_tokens): %d documents "
            "give %d contexts of %d tokens; collecting with what there is (a larger dataset "
            "gives more examples per latent)",
            done * ctx,
            budget * ctx,
            n_docs,
            done,
            ctx,
        )
    else:
        log.info("collected %d tokens (%d contexts) from %d documents", done * ctx, done, n_docs)


def _clean_stale(root: Path, keep: set[str]) -> None:
    """Remove what a killed run (or a dead worker) left behind: every shard folder not named in
    `keep` (temporary, never committed, or of a slice no longer kept) and half-written files."""
    shards = root / "shards"
    shards.mkdir(exist_ok=True)
    for entry in shards.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
    for folder in (root, *root.glob("coders/*"), root / "stats"):
        for entry in folder.glob(".*.tmp-*"):  # half-written manifests, decoders, statistics
            if entry.is_file():
                entry.unlink()


_Columns = tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32], npt.NDArray[np.int64]]
_Shard = tuple[npt.NDArray[np.int64], dict[str, _Columns]]


def _stable_order(latent: npt.NDArray[np.int64], d_sae: int) -> npt.NDArray[np.intp]:
    """Stable argsort by latent: an LSD radix sort over 16-bit digits (numpy's stable sort of
    16-bit keys is a radix sort, several times faster than sorting 64-bit keys)."""
    order = np.argsort((latent & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while (d_sae - 1) >> shift:
        digit = ((latent[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


class _ShardBuffer:
    """One coder's sparse activations of one shard, sorted per batch, merged by latent at the end.

    Each batch is sorted by (latent, token index) on arrival (small arrays, radix sort); `finish`
    places every batch's run of each latent after the earlier batches' runs with one scatter, so
    the shard is ordered by latent, then token index, without a global sort.
    """

    def __init__(self, d_sae: int) -> None:
        self.d_sae = d_sae
        self.batches: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]] = []
        self.latents: list[npt.NDArray[np.int64]] = []
        self.counts: list[npt.NDArray[np.int64]] = []

    def add(
        self,
        latent: npt.NDArray[np.int64],
        index: npt.NDArray[np.uint32],
        value: npt.NDArray[np.float32],
    ) -> None:
        if len(index) > 1 and not bool((index[1:] >= index[:-1]).all()):
            first = np.argsort(index, kind="stable")  # backends need not return row-major order
            latent, index, value = latent[first], index[first], value[first]
        order = _stable_order(latent, self.d_sae)
        self.latents.append(latent[order])
        self.batches.append((index[order], value[order]))
        self.counts.append(np.bincount(latent, minlength=self.d_sae).astype(np.int64))

    def finish(self) -> _Columns:
        d = self.d_sae
        counts = np.stack(self.counts) if self.counts else np.zeros((0, d), dtype=np.int64)
        total = counts.sum(axis=0)
        offsets = np.zeros(d + 1, dtype=np.int64)
        np.cumsum(total, out=offsets[1:])
        n = int(offsets[-1])
        index = np.empty(n, dtype=np.uint32)
        value = np.empty(n, dtype=np.float32)
        before = np.cumsum(counts, axis=0) - counts  # entries of each latent in earlier batches
        for b, ((idx, val), lat) in enumerate(zip(self.batches, self.latents, strict=True)):
            if not len(idx):
                continue
            local = np.zeros(d + 1, dtype=np.int64)
            np.cumsum(counts[b], out=local[1:])
            dest = offsets[lat] + before[b, lat] + (np.arange(len(idx)) - local[lat])
            index[dest] = idx
            value[dest] = val
        self.batches.clear()
        self.latents.clear()
        return index, value, offsets


def _collect_shard(
    backend: Backend,
    coders: Sequence[SparseCoder],
    settings: CollectionSettings,
    tokens: npt.NDArray[np.int64],
    bar: CollectionProgress,
) -> tuple[npt.NDArray[np.int64], dict[str, _ShardBuffer]]:
    """Run the shard's contexts through the backend in batches; sparse acts sorted by latent."""
    ctx = settings.context_length
    bos = settings.bos_token_id
    buffers = {c.id: _ShardBuffer(int(c.d_sae)) for c in coders}
    mask = np.ones((min(settings.batch_size, len(tokens)), ctx), dtype=np.bool_)
    for lo in range(0, len(tokens), settings.batch_size):
        check_interrupt()  # Ctrl-C stops between batches; the shards committed are kept
        ids = tokens[lo : lo + settings.batch_size]
        batch = TokenBatch(ids=ids, mask=mask[: len(ids)])
        acts = backend.latent_acts(batch, coders)
        for c in coders:
            if c.id not in acts:
                raise ConfigError(f"backend {backend.name} returned no activations for {c.id}")
            a = acts[c.id]
            # np.asarray with a dtype copies only when the backend's dtype differs
            row = np.asarray(to_numpy(a.row), dtype=np.int64)
            pos = np.asarray(to_numpy(a.pos), dtype=np.int64)
            latent = np.asarray(to_numpy(a.latent), dtype=np.int64)
            value = np.asarray(to_numpy(a.value), dtype=np.float32)
            keep = value > 0
            if c.exclude_bos and bos is not None:
                # backends drop only a leading BOS; the store also drops the BOS separators it
                # put between documents, so no coder that excludes BOS ever sees one
                keep &= ids[row, pos] != bos
            if not keep.all():
                row, pos, latent, value = row[keep], pos[keep], latent[keep], value[keep]
            if len(latent) and (latent.min() < 0 or latent.max() >= c.d_sae):
                raise ConfigError(f"backend returned latents outside [0, {c.d_sae}) for {c.id}")
            index = ((row + lo) * ctx + pos).astype(np.uint32)
            buffers[c.id].add(latent, index, value)
        bar.update(len(ids) * ctx)
    return tokens, buffers


def _write_shard(
    root: Path,
    number: int,
    start: int,
    shard: _Shard,
    settings: CollectionSettings,
    fsync: bool,
    name: str | None = None,
) -> ShardInfo:
    """Write one shard into a temporary folder and publish it as `shards/<folder>` (`name`, or
    the shard's number); the manifest is the caller's."""
    tokens, acts = shard
    folder = name if name is not None else f"{number:05d}"
    tmp = root / "shards" / f".tmp-{folder}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir(parents=True)
    try:
        token_dtype = np.int32 if tokens.max(initial=0) < 2**31 else np.int64
        checksums = {
            "tokens.npy": save_npy(tmp / "tokens.npy", tokens.astype(token_dtype), fsync=fsync)
        }
        nnz: dict[str, int] = {}
        dtypes: dict[str, str] = {}
        for info in settings.coders:
            index, value, offsets = acts[info.id]
            dtype = settings.value_dtype
            if dtype == "float16" and len(value) and float(value.max()) > FLOAT16_MAX:
                dtype = "float32"  # keep large activations exact rather than overflow to inf
            columns: dict[str, npt.NDArray[Any]] = {
                "offsets": offsets,
                "index": index,
                "values": value.astype(dtype),
            }
            for kind, column in columns.items():
                file = f"{info.key}.{kind}.npy"
                checksums[file] = save_npy(tmp / file, column, fsync=fsync)
            nnz[info.key] = len(value)
            dtypes[info.key] = dtype
        publish_dir(tmp, root / "shards" / folder, fsync=fsync)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return ShardInfo(
        index=number,
        start=start,
        n_contexts=len(tokens),
        nnz=nnz,
        value_dtypes=dtypes,
        checksums=checksums,
        name=name,
    )
