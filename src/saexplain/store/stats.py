"""Per-latent statistics over a store: firing count and frequency, max, mean, quantile edges.

Computed once after collection, latent block by latent block (each block a contiguous slice of
every shard), so memory is bounded by `block_nnz` whatever the store's size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from saexplain.models import LatentStats
from saexplain.store._io import atomic_write_bytes, bytes_checksum

if TYPE_CHECKING:
    from saexplain.store.reader import ActivationStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StoreStats:
    """Statistics of every latent of one coder. `quantiles[l]` holds `n_quantiles + 1` edges
    (min, the inner quantiles, max) of latent l's nonzero activations; zeros for dead latents."""

    n_tokens: int
    count: IntArray
    sum: FloatArray
    max: FloatArray
    quantiles: FloatArray

    @property
    def d_sae(self) -> int:
        return len(self.count)

    @property
    def frequency(self) -> FloatArray:
        out: FloatArray = self.count / max(self.n_tokens, 1)
        return out

    @property
    def mean(self) -> FloatArray:
        out: FloatArray = np.divide(
            self.sum, self.count, out=np.zeros_like(self.sum), where=self.count > 0
        )
        return out

    @property
    def dead(self) -> IntArray:
        return np.flatnonzero(self.count == 0)

    def latent(self, index: int) -> LatentStats:
        c = int(self.count[index])
        return LatentStats(
            n_tokens=self.n_tokens,
            count=c,
            max=float(self.max[index]),
            mean=float(self.sum[index] / c) if c else 0.0,
            quantiles=tuple(float(q) for q in self.quantiles[index]) if c else (),
        )

    def save(self, path: Path) -> str:
        """Write the statistics to `path` atomically; returns the file's checksum."""
        buf = io.BytesIO()
        np.savez(
            buf,
            n_tokens=np.int64(self.n_tokens),
            count=self.count,
            sum=self.sum,
            max=self.max,
            quantiles=self.quantiles,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        data = buf.getvalue()
        atomic_write_bytes(path, data)
        return bytes_checksum(data)

    @classmethod
    def load(cls, path: Path) -> StoreStats:
        with np.load(path) as z:
            return cls(
                n_tokens=int(z["n_tokens"]),
                count=z["count"],
                sum=z["sum"],
                max=z["max"],
                quantiles=z["quantiles"],
            )


def _block_quantiles(
    latent: IntArray, value: npt.NDArray[np.float32], lo: int, hi: int, n_q: int
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    n = hi - lo
    local = latent - lo
    count: IntArray = np.bincount(local, minlength=n).astype(np.int64)
    total = np.asarray(
        np.bincount(local, weights=value.astype(np.float64), minlength=n), dtype=np.float64
    )
    # one sort of 64-bit keys (latent, value bits): for non-negative floats the IEEE bit pattern
    # orders like the value, so this sorts by latent then value without an argsort
    bits = np.ascontiguousarray(value, dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys = np.sort((local.astype(np.uint64) << np.uint64(32)) | bits)
    v = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32).astype(np.float64)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(count[:-1], out=starts[1:])
    mx: FloatArray = np.zeros(n)
    qs: FloatArray = np.zeros((n, n_q + 1))
    alive = count > 0
    if alive.any():
        s, c = starts[alive], count[alive]
        mx[alive] = v[s + c - 1]
        # linear interpolation, as numpy.quantile's default method
        pos = np.linspace(0.0, 1.0, n_q + 1)[None, :] * (c[:, None] - 1)
        below = np.floor(pos).astype(np.int64)
        above = np.minimum(below + 1, c[:, None] - 1)
        frac = pos - below
        qs[alive] = v[s[:, None] + below] * (1 - frac) + v[s[:, None] + above] * frac
    return count, total, mx, qs


def compute_stats(
    store: ActivationStore,
    coder_id: str | None = None,
    *,
    n_quantiles: int = 10,
    block_nnz: int = 1_000_000,
) -> StoreStats:
    info = store.coder(coder_id)
    counts = store.counts(info.id)
    d = info.d_sae
    count = np.zeros(d, dtype=np.int64)
    total = np.zeros(d)
    mx = np.zeros(d)
    qs = np.zeros((d, n_quantiles + 1))
    cum = np.concatenate([[0], np.cumsum(counts)])
    lo = 0
    while lo < d:
        # the largest hi with at most block_nnz activations in [lo, hi) (at least one latent)
        hi = int(np.searchsorted(cum, cum[lo] + block_nnz, side="right")) - 1
        hi = min(max(hi, lo + 1), d)
        latent, value = store.latent_block(lo, hi, info.id)
        c, t, m, q = _block_quantiles(latent, value, lo, hi, n_quantiles)
        count[lo:hi], total[lo:hi], mx[lo:hi], qs[lo:hi] = c, t, m, q
        lo = hi
    return StoreStats(n_tokens=store.n_tokens, count=count, sum=total, max=mx, quantiles=qs)


def compute_all_stats(store: ActivationStore, *, n_quantiles: int = 10) -> None:
    """Compute and save every coder's statistics, then mark them complete in the manifest (with
    the files' checksums)."""
    checksums = dict(store.manifest.checksums)
    for info in store.coders:
        stats = compute_stats(store, info.id, n_quantiles=n_quantiles)
        name = f"stats/{info.key}.npz"
        checksums[name] = stats.save(store.path / name)
    manifest = store.manifest.model_copy(update={"stats_complete": True, "checksums": checksums})
    manifest.save(store.path)
