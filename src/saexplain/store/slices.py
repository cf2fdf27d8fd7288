"""Collection in slices, by several processes at once, into one store (an executor's workers).

The token stream is cut into slices of whole contexts, slice k = contexts `[a_k, b_k)`. Each
worker runs its own backend over its slices (`collect_slice`) and writes their shards into the
shared store directory under names of the slice (`shards/s<a_k>-<n>`), so two workers never
write to one folder; it never touches the manifest. The driver alone writes the manifest,
through the store's atomic write, once per finished slice (`commit_slice`):

- a slice that finished after every slice before it joins `Manifest.shards`, the store's
  gapless prefix (what a reader sees);
- one that finished ahead of an unfinished slice is `parked` (complete and checksummed, not yet
  read) and joins the prefix when the slices before it have;
- a slice whose worker died never reaches the manifest: its folders are removed when it is
  collected again (`collect_slice` on the retry, `plan_slices` on a resumed run).

A resumed run (`plan_slices`) keeps the prefix and every parked slice and collects the rest.
The finished store equals a one-process `collect` of the same tokens: the same settings, tokens
and activations in the reader's order (within a shard entries are sorted by latent then token,
shards are in token order), hence the same statistics; only the shards' names and, where a slice
boundary cuts one, their boundaries differ.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saexplain.errors import ConfigError, EmptyDatasetError
from saexplain.interrupts import check_interrupt
from saexplain.protocols import Backend, SparseCoder
from saexplain.store.manifest import Manifest, ShardInfo, saexplain_version
from saexplain.store.writer import (
    CollectionProgress,
    _clean_stale,
    _collect_shard,
    _log_collected,
    _open_or_create,
    _save_decoders,
    _skip,
    _take,
    _write_shard,
    collection_settings,
)

__all__ = [
    "Slice",
    "SliceResult",
    "collect_slice",
    "commit_slice",
    "finish_slices",
    "open_sliced",
    "plan_slices",
]

log = logging.getLogger("saexplain.store")


@dataclass(frozen=True)
class Slice:
    """Contexts `[start, stop)` of the token stream."""

    start: int
    stop: int

    @property
    def prefix(self) -> str:
        """The start of the names of this slice's shard folders."""
        return f"s{self.start:010d}"

    def shard_name(self, n: int) -> str:
        return f"{self.prefix}-{n:04d}"

    def owns(self, folder: str) -> bool:
        """Whether `shards/<folder>` (or a temporary folder of it) is one of this slice's."""
        return folder.startswith(f"{self.prefix}-") or folder.startswith(f".tmp-{self.prefix}-")


@dataclass(frozen=True)
class SliceResult:
    """What a worker collected for one slice: its shards (published, not in the manifest),
    the contexts it got (fewer than asked when the dataset ended inside the slice), the
    documents the stream had read at the slice's end and the tokens it had read."""

    slice: Slice
    shards: tuple[ShardInfo, ...]
    n_contexts: int
    n_documents: int
    n_tokens_read: int


def open_sliced(
    backend: Backend,
    coders: Sequence[SparseCoder],
    dataset: object,
    path: str | os.PathLike[str],
    *,
    fsync: bool = True,
    **settings: Any,
) -> Manifest:
    """Create the store at `path` (or open it to resume: its settings must match) and save the
    coders' decoders; the driver calls this once, before any slice. `settings` are
    `collection_settings`' keywords (a slice's worker passes the same)."""
    if settings.get("n_tokens") is None:
        raise ConfigError("collecting in slices needs a token budget (n_tokens)")
    config, _ = collection_settings(backend, list(coders), dataset, **settings)
    root = Path(path)
    manifest = _open_or_create(root, config, resume=True)
    if settings.get("save_decoder", True):
        manifest = _save_decoders(root, list(coders), config.coders, fsync, manifest)
        manifest.save(root)
    return manifest


def _budget(manifest: Manifest) -> int:
    budget = manifest.settings.token_budget
    if budget is None:
        raise ConfigError("collecting in slices needs a token budget (n_tokens)")
    return budget // manifest.settings.context_length


def _covers(shards: Sequence[ShardInfo], part: Slice) -> bool:
    """Whether `shards` (sorted by start) are exactly the contexts of `part`, without a gap."""
    at = part.start
    for s in shards:
        if s.start != at:
            return False
        at += s.n_contexts
    return bool(shards) and at == part.stop


def plan_slices(
    path: str | os.PathLike[str], manifest: Manifest, slice_contexts: int
) -> tuple[list[Slice], Manifest]:
    """The slices still to collect, and the manifest without the parked shards no finished
    slice holds. Slice boundaries are the multiples of `slice_contexts` (and the end of the
    committed prefix, the budget), so a resumed run with the same setting finds its parked
    slices again; shard folders no slice keeps (a dead worker's) are removed."""
    if slice_contexts < 1:
        raise ConfigError(f"contexts per slice must be >= 1, got {slice_contexts}")
    root = Path(path)
    if manifest.complete:
        return [], manifest
    budget, end = _budget(manifest), manifest.n_contexts
    first = slice_contexts * (end // slice_contexts + 1)
    bounds = sorted({end, budget, *range(first, budget, slice_contexts)})
    slices = [Slice(a, b) for a, b in itertools.pairwise(bounds) if a < b]
    parked = sorted(manifest.parked, key=lambda s: s.start)
    kept: list[ShardInfo] = []
    todo: list[Slice] = []
    for part in slices:
        mine = [s for s in parked if part.start <= s.start < part.stop]
        if _covers(mine, part):
            kept.extend(mine)
        else:
            todo.append(part)
    _clean_stale(root, {s.folder for s in (*manifest.shards, *kept)})
    if len(kept) != len(parked):
        dropped = len(parked) - len(kept)
        warnings.warn(
            f"store {root}: {dropped} parked shard(s) belong to no finished slice of this plan "
            "(another slice size?): collecting them again",
            UserWarning,
            stacklevel=2,
        )
        manifest = manifest.model_copy(update={"parked": tuple(kept)})
        manifest.save(root)
    return todo, manifest


def collect_slice(
    backend: Backend,
    coders: Sequence[SparseCoder],
    dataset: object,
    path: str | os.PathLike[str],
    part: Slice,
    *,
    fsync: bool = True,
    progress: bool = False,
    **settings: Any,
) -> SliceResult:
    """Collect the contexts of `part` into shard folders of the slice (a worker's side): the
    stream is read from its start and the contexts before the slice skipped, so every slice
    sees the stream a one-process collection sees. What an earlier, dead attempt at this slice
    left is removed first. The manifest is not written: the driver commits the result."""
    root = Path(path)
    coder_list = list(coders)
    config, stream = collection_settings(backend, coder_list, dataset, **settings)
    recorded = Manifest.load(root).settings
    if config != recorded:
        old, new = recorded.model_dump(), config.model_dump()
        diff = {k: (old[k], new[k]) for k in old if old[k] != new[k]}
        raise ConfigError(
            f"a worker's collection settings differ from the store's (recorded, worker): {diff}; "
            "every worker must load the same model and coders"
        )
    shards_dir = root / "shards"
    for entry in shards_dir.iterdir():
        if part.owns(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    contexts = iter(stream)
    if _skip(contexts, part.start) < part.start:  # the dataset ended before this slice
        return SliceResult(part, (), 0, stream.n_docs, stream.n_tokens_read)
    bar = CollectionProgress(progress, (part.stop - part.start) * config.context_length, 0)
    infos: list[ShardInfo] = []
    done = part.start
    try:
        while done < part.stop:
            check_interrupt()
            want = min(config.shard_contexts, part.stop - done)
            rows = _take(contexts, want)
            if not rows:
                break
            tokens, buffers = _collect_shard(backend, coder_list, config, np.stack(rows), bar)
            shard = (tokens, {cid: buf.finish() for cid, buf in buffers.items()})
            name = part.shard_name(len(infos))
            infos.append(_write_shard(root, 0, done, shard, config, fsync, name=name))
            done += len(rows)
            if len(rows) < want:
                break
    finally:
        bar.close()
    return SliceResult(part, tuple(infos), done - part.start, stream.n_docs, stream.n_tokens_read)


def commit_slice(path: str | os.PathLike[str], manifest: Manifest, result: SliceResult) -> Manifest:
    """Enter a finished slice in the manifest (the driver's side; one atomic write): park its
    shards, then move every parked shard that continues the prefix into `shards`."""
    root = Path(path)
    parked = sorted((*manifest.parked, *result.shards), key=lambda s: s.start)
    shards = list(manifest.shards)
    end = manifest.n_contexts
    while parked and parked[0].start == end:
        shard = parked.pop(0)
        shards.append(shard.model_copy(update={"index": len(shards)}))
        end += shard.n_contexts
    documents = max(manifest.n_documents or 0, result.n_documents)
    updated = manifest.model_copy(
        update={"shards": tuple(shards), "parked": tuple(parked), "n_documents": documents or None}
    )
    updated.save(root)
    return updated


def finish_slices(
    path: str | os.PathLike[str], manifest: Manifest, *, n_tokens_read: int = 0
) -> Manifest:
    """Mark the store complete once every slice is committed (the driver's side). Raises
    `EmptyDatasetError` when nothing was collected (and removes the empty store), and
    `ConfigError` if a parked slice is left (a slice before it was never committed)."""
    root = Path(path)
    ctx = manifest.settings.context_length
    if manifest.parked:
        first = min(s.start for s in manifest.parked)
        raise ConfigError(
            f"store {root}: contexts [{manifest.n_contexts}, {first}) were never collected; "
            "rerun to collect them"
        )
    if not manifest.shards:
        shutil.rmtree(root, ignore_errors=True)
        if n_tokens_read:
            raise EmptyDatasetError(
                f"the dataset has {n_tokens_read} tokens, shorter than one context ({ctx} tokens "
                f"with the BOS policy: {manifest.settings.bos_policy})"
            )
        raise EmptyDatasetError("the dataset produced no contexts")
    manifest = manifest.model_copy(
        update={"complete": True, "saexplain_version": saexplain_version()}
    )
    manifest.save(root)
    _log_collected(manifest.n_contexts, _budget(manifest), ctx, manifest.n_documents or 0)
    return manifest
