"""Which latents a run explains: `select_latents` and the fate of each selected latent."""

from __future__ import annotations

import numpy as np
from pydantic import NonNegativeInt

from saexplain.errors import LatentIndexError
from saexplain.methods.seeds import derive_seed
from saexplain.models import (
    Frozen,
    LatentSelection,
)
from saexplain.store.reader import ActivationStore


class SelectionReport(Frozen):
    """The latents a selection yields, and what it left out and why."""

    coder_id: str
    latents: tuple[int, ...]
    dead: tuple[int, ...]  # selected (or candidate) latents that never fired
    rare: tuple[int, ...]  # selected latents firing on fewer than `rare_below` tokens
    outside_band: NonNegativeInt = 0  # candidates removed by the frequency band
    candidates: NonNegativeInt = 0  # latents considered before sampling


def select_latents(
    store: ActivationStore,
    selection: LatentSelection | None = None,
    *,
    coder_id: str | None = None,
    seed: int | None = None,
    rare_below: int = 20,
) -> SelectionReport:
    """Apply a `LatentSelection` (indices, range, random sample of alive ones, frequency band).

    Explicit indices and ranges keep dead latents (reported in `dead`); a random sample draws
    from alive latents only, and reports how many candidates were dead.
    """
    selection = selection or LatentSelection()
    info = store.coder(coder_id)
    stats = store.stats(info.id)
    d = info.d_sae
    if selection.indices is not None:
        idx = np.asarray(selection.indices, dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= d)]
        if len(bad):
            raise LatentIndexError(f"latents {bad.tolist()} are outside [0, {d}) for {info.id}")
        candidates = np.unique(idx)
    else:
        start = selection.start or 0
        stop = d if selection.stop is None else selection.stop
        if stop > d or start >= d:
            raise LatentIndexError(
                f"latent range [{start}, {stop}) is outside [0, {d}) for {info.id}"
            )
        candidates = np.arange(start, stop, dtype=np.int64)
    freq = stats.frequency[candidates]
    band = np.ones(len(candidates), dtype=bool)
    if selection.min_frequency is not None:
        band &= freq >= selection.min_frequency
    if selection.max_frequency is not None:
        band &= freq <= selection.max_frequency
    outside = int((~band).sum())
    kept = candidates[band]
    dead_all = kept[stats.count[kept] == 0]
    if selection.sample is not None:
        alive = kept[stats.count[kept] > 0]
        rng = np.random.default_rng(
            derive_seed(store.settings.seed if seed is None else seed, info.id, "select")
        )
        n = min(selection.sample, len(alive))
        kept = np.sort(rng.choice(alive, size=n, replace=False)) if n else alive[:0]
    counts = stats.count[kept]
    return SelectionReport(
        coder_id=info.id,
        latents=tuple(int(x) for x in kept),
        dead=tuple(int(x) for x in dead_all),
        rare=tuple(int(x) for x, c in zip(kept, counts, strict=True) if 0 < c < rare_below),
        outside_band=outside,
        candidates=len(candidates),
    )
