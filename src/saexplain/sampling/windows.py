"""Activating windows of one latent and the samplers that pick among them.

Windows of `window` tokens are placed around activation peaks (`lead` tokens before the peak),
never overlapping one another; each carries its max activation and its equal-count bin. A sampler
picks windows among those still available and marks them used, so samplers that draw one after
another never share a window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saexplain.errors import ConfigError
from saexplain.sampling.config import RecordConfig, SamplerSpec
from saexplain.store.reader import LatentActivations

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WindowPool:
    """Non-overlapping activating windows of one latent: `(rows[i], starts[i])`, max values."""

    rows: IntArray
    starts: IntArray
    peaks: IntArray  # position of the peak inside the context
    maxes: FloatArray
    bins: IntArray  # equal-count activation bin, 0 = weakest
    edges: FloatArray  # (n_bins + 1,): bin b holds maxes in [edges[b], edges[b+1]]
    subsampled: bool

    def __len__(self) -> int:
        return len(self.rows)


def _chunk_peaks(
    acts: LatentActivations, ctx: int, window: int
) -> tuple[IntArray, IntArray, FloatArray]:
    """The highest activation in every (context, window-aligned chunk) that has one."""
    if not len(acts):
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    n_chunks = -(-ctx // window)
    key = acts.rows * n_chunks + acts.pos // window
    order = np.lexsort((-acts.values, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    pick = order[first]
    return acts.rows[pick], acts.pos[pick], acts.values[pick].astype(np.float64)


def _dense_rows(acts: LatentActivations, rows: IntArray, ctx: int) -> dict[int, FloatArray]:
    """This latent's per-token values in each of `rows` (a dense row per context)."""
    out: dict[int, FloatArray] = {}
    uniq = np.unique(rows)
    if not len(uniq):
        return out
    dense = np.zeros((len(uniq), ctx))
    sel = np.isin(acts.rows, uniq)
    dense[np.searchsorted(uniq, acts.rows[sel]), acts.pos[sel]] = acts.values[sel]
    for i, r in enumerate(uniq.tolist()):
        out[r] = dense[i]
    return out


def _place_windows(
    rows: IntArray,
    peaks: IntArray,
    order: Iterable[int],
    ctx: int,
    window: int,
    lead: int,
    taken: dict[int, list[int]] | None = None,
    limit: int | None = None,
) -> list[tuple[int, int, int]]:
    """Greedy: a window around each peak in `order`, skipped when it overlaps one already placed."""
    taken = {} if taken is None else taken
    placed: list[tuple[int, int, int]] = []
    hi = max(ctx - window, 0)
    for i in order:
        r, p = int(rows[i]), int(peaks[i])
        start = min(max(p - lead, 0), hi)
        starts = taken.setdefault(r, [])
        if any(abs(start - s) < window for s in starts):
            continue
        starts.append(start)
        placed.append((r, start, p))
        if limit is not None and len(placed) >= limit:
            break
    return placed


def build_pool(
    acts: LatentActivations,
    ctx: int,
    config: RecordConfig,
    rng: np.random.Generator,
    keep_top: int = 0,
) -> tuple[WindowPool, dict[int, FloatArray]]:
    window = min(config.window, ctx)
    rows, peaks, values = _chunk_peaks(acts, ctx, window)
    subsampled = False
    order = np.argsort(-values, kind="stable")
    if len(order) > config.max_pool:
        # keep the strongest candidates the top sampler may need, and a uniform sample of the rest
        subsampled = True
        head = order[: min(keep_top * 2, config.max_pool)]
        rest = order[len(head) :]
        extra = rng.choice(rest, size=config.max_pool - len(head), replace=False)
        order = np.concatenate([head, extra[np.argsort(-values[extra], kind="stable")]])
    placed = _place_windows(rows, peaks, order.tolist(), ctx, window, config.lead_tokens)
    w_rows = np.asarray([p[0] for p in placed], dtype=np.int64)
    w_starts = np.asarray([p[1] for p in placed], dtype=np.int64)
    w_peaks = np.asarray([p[2] for p in placed], dtype=np.int64)
    dense = _dense_rows(acts, w_rows, ctx)
    maxes = np.asarray(
        [
            dense[r][s : s + window].max()
            for r, s in zip(w_rows.tolist(), w_starts.tolist(), strict=True)
        ],
        dtype=np.float64,
    )
    n = len(maxes)
    bins = np.zeros(n, dtype=np.int64)
    edges = np.zeros(config.n_bins + 1)
    if n:
        rank = np.argsort(maxes, kind="stable")
        bins[rank] = (np.arange(n) * config.n_bins) // n
        for b in range(config.n_bins):
            in_bin = maxes[bins == b]
            edges[b] = in_bin.min() if len(in_bin) else (edges[b - 1] if b else maxes.min())
        edges[config.n_bins] = maxes.max()
    pool = WindowPool(w_rows, w_starts, w_peaks, maxes, bins, edges, subsampled)
    return pool, dense


# --- samplers -----------------------------------------------------------------------------------


def sample(
    pool: WindowPool,
    spec: SamplerSpec,
    available: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    n_bins: int,
) -> IntArray:
    """Indices of `pool` chosen by one sampler among `available` ones (which it then clears)."""
    idx = np.flatnonzero(available)
    n = min(spec.n, len(idx))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if spec.name == "top":
        chosen = idx[np.argsort(-pool.maxes[idx], kind="stable")[:n]]
    elif spec.name == "random":
        chosen = rng.choice(idx, size=n, replace=False)
    elif spec.name == "importance":
        w = pool.maxes[idx]
        n = min(n, int((w > 0).sum()))
        chosen = rng.choice(idx, size=n, replace=False, p=w / w.sum()) if n else idx[:0]
    elif spec.name == "quantile":
        per_bin = [
            spec.n // n_bins + (1 if b >= n_bins - spec.n % n_bins else 0) for b in range(n_bins)
        ]
        parts = []
        for b in range(n_bins - 1, -1, -1):  # strongest bin first
            in_bin = idx[pool.bins[idx] == b]
            k = min(per_bin[b], len(in_bin))
            if k:
                parts.append(rng.choice(in_bin, size=k, replace=False))
        chosen = np.concatenate(parts) if parts else idx[:0]
    else:  # pragma: no cover - the Literal type forbids it
        raise ConfigError(f"unknown sampler {spec.name!r}")
    chosen = np.asarray(chosen, dtype=np.int64)
    available[chosen] = False
    return chosen
