"""Reading a store: one latent's activations without scanning the others, tokens by context.

Every file is checked against the checksum the manifest records for it when this process first
opens it (then memory-mapped: later reads cost nothing extra); a missing, cut short or altered
file raises a one-line `StoreCorruptError` naming the file and how to rebuild it.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import ConfigError, LatentIndexError, StoreCorruptError
from saexplain.models import LatentStats
from saexplain.store._io import verify_file
from saexplain.store.manifest import CoderInfo, CollectionSettings, Manifest

if TYPE_CHECKING:
    from saexplain.store.stats import StoreStats

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (the error we raise stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class LatentActivations:
    """Where one latent fired: context `rows`, positions `pos`, `values`; sorted by (row, pos)."""

    rows: IntArray
    pos: IntArray
    values: FloatArray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def max(self) -> float:
        return float(self.values.max()) if len(self.values) else 0.0


class ActivationStore:
    """A read-only view of a collected store directory. Cheap to open; reads lazily (memmap)."""

    def __init__(self, path: str | os.PathLike[str], *, max_open_shards: int = 128) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        self._starts = np.asarray([s.start for s in self.manifest.shards], dtype=np.int64)
        self._cache: OrderedDict[tuple[int, str], npt.NDArray[Any]] = OrderedDict()
        self._max_open = max(3, max_open_shards * 3)
        self._stats: dict[str, StoreStats] = {}
        self._decoders: dict[str, npt.NDArray[np.float32] | None] = {}
        unverified = sum(not s.checksums for s in self.manifest.shards)
        if unverified:
            warnings.warn(
                f"the store {self.path} has no checksums for {unverified} of its "
                f"{len(self.manifest.shards)} shards (written before saexplain recorded them); "
                "they are read unverified: delete the store and rerun to rebuild it with checksums",
                UserWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        coders = ", ".join(c.id for c in self.coders)
        return f"ActivationStore({str(self.path)!r}, {self.n_tokens} tokens, coders: {coders})"

    # --- description ----------------------------------------------------------------------------

    @property
    def settings(self) -> CollectionSettings:
        return self.manifest.settings

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    @property
    def context_length(self) -> int:
        return self.settings.context_length

    @property
    def n_contexts(self) -> int:
        return self.manifest.n_contexts

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def coders(self) -> tuple[CoderInfo, ...]:
        return self.settings.coders

    def coder(self, coder_id: str | None = None) -> CoderInfo:
        """A coder by id; with None, the store's only coder."""
        if coder_id is None:
            if len(self.coders) != 1:
                ids = [c.id for c in self.coders]
                raise ConfigError(f"this store holds {len(ids)} coders; name one: {ids}")
            return self.coders[0]
        return self.manifest.coder(coder_id)

    def nnz(self, coder_id: str | None = None) -> int:
        return self.manifest.nnz(self.coder(coder_id).id)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # --- raw arrays -----------------------------------------------------------------------------

    def _load_checked(self, file: Path, expected: str | None, fix: str) -> npt.NDArray[Any]:
        """Memory-map `file` once it matches its checksum (exists, for an unverified store)."""
        verify_file(file, expected, fix)
        try:
            arr: npt.NDArray[Any] = np.load(file, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:  # cut short: only unverified stores get here
            raise StoreCorruptError(
                f"store file {file} is damaged ({_reason(exc)}); {fix}"
            ) from None
        return arr

    def _array(self, shard: int, name: str) -> npt.NDArray[Any]:
        key = (shard, name)
        arr = self._cache.get(key)
        if arr is None:
            info = self.manifest.shards[shard]
            folder = self.path / "shards" / info.folder
            fix = (
                f"delete the shard {folder} (or the whole store {self.path}) and rerun: "
                "collection resumes from that shard"
            )
            arr = self._load_checked(folder / f"{name}.npy", info.checksums.get(f"{name}.npy"), fix)
            self._cache[key] = arr
            if len(self._cache) > self._max_open:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return arr

    def check_latent(self, latent: int, coder_id: str | None = None) -> CoderInfo:
        info = self.coder(coder_id)
        if not 0 <= int(latent) < info.d_sae:
            raise LatentIndexError(f"latent {latent} is outside [0, {info.d_sae}) for {info.id}")
        return info

    def activations(self, latent: int, coder_id: str | None = None) -> LatentActivations:
        """Every recorded activation of `latent`, read from one contiguous slice per shard."""
        info = self.check_latent(latent, coder_id)
        ctx = self.context_length
        rows, pos, vals = [], [], []
        for i, shard in enumerate(self.manifest.shards):
            if not shard.nnz.get(info.key):
                continue
            offsets = self._array(i, f"{info.key}.offsets")
            lo, hi = int(offsets[latent]), int(offsets[latent + 1])
            if hi == lo:
                continue
            index = np.asarray(self._array(i, f"{info.key}.index")[lo:hi], dtype=np.int64)
            rows.append(index // ctx + shard.start)
            pos.append(index % ctx)
            vals.append(np.asarray(self._array(i, f"{info.key}.values")[lo:hi], dtype=np.float32))
        if not rows:
            z = np.zeros(0, dtype=np.int64)
            return LatentActivations(z, z, np.zeros(0, dtype=np.float32))
        return LatentActivations(np.concatenate(rows), np.concatenate(pos), np.concatenate(vals))

    def latent_block(
        self, lo: int, hi: int, coder_id: str | None = None
    ) -> tuple[IntArray, FloatArray]:
        """(latent, value) of every activation of latents [lo, hi), shard by shard (each
        shard's part grouped by latent; not merged across shards)."""
        info = self.coder(coder_id)
        lat, vals = [], []
        for i, shard in enumerate(self.manifest.shards):
            if not shard.nnz.get(info.key):
                continue
            offsets = np.asarray(self._array(i, f"{info.key}.offsets")[lo : hi + 1], dtype=np.int64)
            a, b = int(offsets[0]), int(offsets[-1])
            if b == a:
                continue
            lat.append(np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(offsets)))
            vals.append(np.asarray(self._array(i, f"{info.key}.values")[a:b], dtype=np.float32))
        if not lat:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return np.concatenate(lat), np.concatenate(vals)

    def counts(self, coder_id: str | None = None) -> IntArray:
        """Firing count of every latent (from the shards' offsets; no values read)."""
        info = self.coder(coder_id)
        total = np.zeros(info.d_sae, dtype=np.int64)
        for i, shard in enumerate(self.manifest.shards):
            if shard.nnz.get(info.key):
                offsets: IntArray = np.asarray(
                    self._array(i, f"{info.key}.offsets"), dtype=np.int64
                )
                total += offsets[1:] - offsets[:-1]
        return total

    def tokens(self, rows: npt.ArrayLike) -> IntArray:
        """Token ids of the given contexts, shape (len(rows), context_length)."""
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.zeros((len(r), self.context_length), dtype=np.int64)
        if not len(r):
            return out
        if r.min() < 0 or r.max() >= self.n_contexts:
            raise IndexError(f"context rows outside [0, {self.n_contexts})")
        shard_of = np.searchsorted(self._starts, r, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self._array(int(s), "tokens")[r[sel] - self._starts[s]]
        return out

    def decoder(self, coder_id: str | None = None) -> npt.NDArray[np.float32] | None:
        """The coder's W_dec (d_sae, d_in) if it was saved at collection time."""
        info = self.coder(coder_id)
        if info.id not in self._decoders:
            name = f"coders/{info.key}/W_dec.npy"
            file = self.path / name
            expected = self.manifest.checksums.get(name)
            fix = f"delete {file} and rerun: collection saves it again"
            self._decoders[info.id] = (
                self._load_checked(file, expected, fix) if expected or file.exists() else None
            )
        return self._decoders[info.id]

    # --- statistics -----------------------------------------------------------------------------

    def stats(self, coder_id: str | None = None) -> StoreStats:
        from saexplain.store.stats import StoreStats, compute_stats

        info = self.coder(coder_id)
        if info.id not in self._stats:
            name = f"stats/{info.key}.npz"
            file = self.path / name
            if file.exists():
                fix = f"delete {file} and rerun: collection computes the statistics again"
                verify_file(file, self.manifest.checksums.get(name), fix)
                try:
                    self._stats[info.id] = StoreStats.load(file)
                except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
                    # cut short: only a store without checksums gets here
                    raise StoreCorruptError(
                        f"store file {file} is damaged ({_reason(exc)}); {fix}"
                    ) from None
            else:
                self._stats[info.id] = compute_stats(self, info.id)
        return self._stats[info.id]

    def latent_stats(self, latent: int, coder_id: str | None = None) -> LatentStats:
        info = self.check_latent(latent, coder_id)
        return self.stats(info.id).latent(latent)


def open_store(path: str | os.PathLike[str]) -> ActivationStore:
    return ActivationStore(path)
