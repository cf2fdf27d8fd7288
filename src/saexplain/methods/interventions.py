"""Interventions at a calibrated strength: the shared part of the output-side methods.

A clamp value means different things for different latents (decoder norms, how much the model
cares about the direction), so output-side methods compare latents at equal *strength*: the mean
KL divergence between the clean and the intervened next-token distributions over a set of
neutral prompts (eq. 2 of the interventions section in "Automatically interpreting millions of
features"). `calibrate` finds the clamp value (or steering scale) reaching a target KL:

    strength = await calibrate(ctx, latent, target_kl=0.5)       # a `Strength`
    pairs = await generate_pairs(ctx, strength, NEUTRAL_PROMPTS,
                                 max_new_tokens=24, temperature=1.0, seed=seed)

The search brackets the target by growing the value fourfold, then narrows the bracket (a
bisection whose split point is interpolated in log-log space, where the KL of a small edit grows
like the square of its size, and kept inside the middle 80% of the bracket). Each step is one
batched forward pass over all prompts, under the backend's model lock; the whole search holds
the lock, so two methods calibrating the same latent at once search once. Results are cached per
(coder, latent, target, kind, prompts, search settings): as JSON files under the run's
`ctx.work_dir` (written atomically, so a crash leaves the old file or the new one), else in
memory for the coder object. A target the search cannot reach (the KL saturates below it before
`max_value`, or the tolerance is not met within `max_steps`) is reported with `reached=False` and
the closest value found; it is never silently replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.concurrency import run_model
from saexplain.errors import ConfigError
from saexplain.files import atomic_write_text
from saexplain.methods.model import to_numpy
from saexplain.protocols import (
    Add,
    Backend,
    Clamp,
    Edit,
    MethodContext,
    SparseCoder,
    TokenBatch,
    write_hook,
)

__all__ = [
    "NEUTRAL_PROMPTS",
    "Strength",
    "calibrate",
    "generate_pairs",
    "mean_kl",
]

FloatArray = npt.NDArray[np.float64]
KINDS: tuple[str, ...] = ("clamp", "steer")

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "I think that",
    "The",
    "Here is a short story:",
    "Let me tell you about",
    "In my opinion,",
    "Yesterday I",
    "The most important thing is",
    "She said that",
)
"""Short prompts that favour no topic: the default prompt set for calibration and generation."""

CACHE_VERSION = 1  # bump when the search changes what it finds
DEFAULT_MAX_VALUE = 1e4
_GROWTH = 4.0  # bracket growth per step while the KL is below the target


@dataclass(frozen=True)
class Strength:
    """An intervention on one latent calibrated to a target mean KL (nats) over prompts."""

    latent: int
    target_kl: float
    value: float  # the clamp value (kind "clamp") or steering scale (kind "steer")
    kl: float  # mean KL(clean || intervened) reached at `value`
    reached: bool  # |kl - target_kl| <= tol * target_kl
    steps: int  # forward passes the search used (0 when read from the cache)
    kind: str  # "clamp" | "steer"

    def edits(self, coder: SparseCoder, *, rows: tuple[int, ...] | None = None) -> list[Edit]:
        """The edits applying this strength at every position (of the batch `rows` only, when
        given: see `Clamp.rows`)."""
        return intervention_edits(coder, self.latent, self.value, self.kind, rows=rows)

    def to_json(self) -> dict[str, Any]:
        """The strength as recorded in evidence and in the calibration cache."""
        return {
            "latent": self.latent,
            "target_kl": self.target_kl,
            "value": round(self.value, 6),
            "kl": round(self.kl, 6),
            "reached": self.reached,
            "steps": self.steps,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Strength:
        return cls(
            latent=int(data["latent"]),
            target_kl=float(data["target_kl"]),
            value=float(data["value"]),
            kl=float(data["kl"]),
            reached=bool(data["reached"]),
            steps=int(data["steps"]),
            kind=str(data["kind"]),
        )


def intervention_edits(
    coder: SparseCoder,
    latent: int,
    value: float,
    kind: str,
    *,
    rows: tuple[int, ...] | None = None,
) -> list[Edit]:
    """`kind="clamp"`: set the latent to `value` at every position (the coder's reconstruction
    error kept); `kind="steer"`: add `value` times its decoder row where the coder writes.
    `rows`: on those batch rows only (None: every row)."""
    if kind == "clamp":
        return [Clamp(coder=coder, latent=latent, value=value, mode="set", rows=rows)]
    if kind == "steer":
        direction = coder.W_dec[latent]
        return [Add(direction=direction, scale=value, hook=write_hook(coder), rows=rows)]
    raise ConfigError(f"unknown intervention kind {kind!r}; choose one of {', '.join(KINDS)}")


# --- the KL of an intervention --------------------------------------------------------------------


def _last_logprobs(backend: Backend, tokens: TokenBatch, edits: Sequence[Edit]) -> FloatArray:
    """Log-probabilities of the next token after each row's last real token, (rows, vocab):
    one batched pass. Right padding sits after that token, so a causal model never reads it."""
    logits = to_numpy(backend.logits(tokens, edits), np.float64)
    last = tokens.mask.sum(axis=1) - 1
    x = logits[np.arange(len(last)), last]
    x = x - x.max(axis=-1, keepdims=True)
    out: FloatArray = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


def _kl(clean: FloatArray, edited: FloatArray) -> float:
    """Mean over rows of KL(clean || edited), from log-probabilities."""
    p = np.exp(clean)
    per_row = (p * (clean - edited)).sum(axis=-1)
    value = float(np.mean(np.maximum(per_row, 0.0)))  # rounding can make a tiny KL negative
    return value if math.isfinite(value) else math.inf


def mean_kl(
    backend: Backend,
    coder: SparseCoder,
    prompts: Sequence[str],
    edits: Sequence[Edit],
    *,
    clean: FloatArray | None = None,
) -> float:
    """Mean over `prompts` of KL(clean || intervened) of the next token after each prompt.

    The intervened distributions come from one batched pass; `clean` (log-probabilities from
    `clean_logprobs`) saves the clean pass when a search reuses it. Synchronous model work: call
    it under the model lock (`run_model`). `coder` names whose edits these are, for symmetry with
    `Strength.edits`; the edits carry it."""
    del coder  # the edits carry the coder; kept in the signature for callers' clarity
    tokens = backend.tokenize(list(prompts))
    base = _last_logprobs(backend, tokens, ()) if clean is None else clean
    return _kl(base, _last_logprobs(backend, tokens, edits))


# --- the search -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Search:
    latent: int
    target: float
    kind: str
    tol: float
    max_steps: int
    max_value: float

    def within(self, kl: float) -> bool:
        return abs(kl - self.target) <= self.tol * self.target


def _start_value(coder: SparseCoder, latent: int) -> float:
    """A first value: an edit of unit size in the residual stream (the decoder row's norm)."""
    norm = float(np.linalg.norm(to_numpy(coder.W_dec[latent])))
    return 1.0 / norm if norm > 0 else 1.0


def _next_value(lo: tuple[float, float], hi: tuple[float, float], target: float) -> float:
    """A split of the bracket (value, kl) `lo` < target < `hi`: interpolated in log-log space,
    clipped to the middle 80% of the bracket (in log space) so it always shrinks."""
    (v0, k0), (v1, k1) = lo, hi
    a, b = math.log(v0), math.log(v1)
    t = 0.5
    if k0 > 0 and k1 > k0 and math.isfinite(k1):
        t = (math.log(target) - math.log(k0)) / (math.log(k1) - math.log(k0))
    t = min(max(t, 0.1), 0.9)
    return math.exp(a + t * (b - a))


def _search(backend: Backend, coder: SparseCoder, prompts: Sequence[str], s: _Search) -> Strength:
    """The calibration, synchronous: one batched pass per step (plus the clean one)."""
    tokens = backend.tokenize(list(prompts))
    clean = _last_logprobs(backend, tokens, ())
    steps = 1
    tried: list[tuple[float, float]] = []

    def kl_at(value: float) -> float:
        nonlocal steps
        steps += 1
        edits = intervention_edits(coder, s.latent, value, s.kind)
        kl = _kl(clean, _last_logprobs(backend, tokens, edits))
        tried.append((value, kl))
        return kl

    lo: tuple[float, float] | None = None
    hi: tuple[float, float] | None = None
    value = min(_start_value(coder, s.latent), s.max_value)
    while steps < s.max_steps:  # grow until the target is bracketed (or the cap is reached)
        kl = kl_at(value)
        if s.within(kl):
            return _strength(s, value, kl, steps, reached=True)
        if kl > s.target:
            hi = (value, kl)
            break
        lo = (value, kl)
        if value >= s.max_value:
            break
        value = min(value * _GROWTH, s.max_value)
    if hi is not None and lo is None:  # the first value overshot: shrink until below
        while steps < s.max_steps:
            value = hi[0] / _GROWTH
            kl = kl_at(value)
            if s.within(kl):
                return _strength(s, value, kl, steps, reached=True)
            if kl > s.target:
                hi = (value, kl)
            else:
                lo = (value, kl)
                break
    while lo is not None and hi is not None and steps < s.max_steps:
        value = _next_value(lo, hi, s.target)
        kl = kl_at(value)
        if s.within(kl):
            return _strength(s, value, kl, steps, reached=True)
        if kl > s.target:
            hi = (value, kl)
        else:
            lo = (value, kl)
    # not reached: the closest value tried (the KL may saturate, or not be monotonic)
    best_value, best_kl = min(tried, key=lambda vk: abs(vk[1] - s.target))
    return _strength(s, best_value, best_kl, steps, reached=False)


def _strength(s: _Search, value: float, kl: float, steps: int, *, reached: bool) -> Strength:
    return Strength(
        latent=s.latent,
        target_kl=s.target,
        value=value,
        kl=kl,
        reached=reached,
        steps=steps,
        kind=s.kind,
    )


# --- the cache ------------------------------------------------------------------------------------

# In memory, per coder object (a coder that cannot be weakly referenced is not cached in memory).
_MEMORY: weakref.WeakKeyDictionary[Any, dict[str, Strength]] = weakref.WeakKeyDictionary()
_MEMORY_LOCK = threading.Lock()


def _cache_key(backend: Backend, coder: SparseCoder, prompts: Sequence[str], s: _Search) -> str:
    """A digest of everything the found value depends on. In a run directory the weights are
    fixed by the run's identity (fingerprints), so names suffice."""
    fields = {
        "version": CACHE_VERSION,
        "model": backend.model_id,
        "coder": coder.id,
        "hook": write_hook(coder),
        "search": asdict(s),
        "prompts": list(prompts),
    }
    return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=12).hexdigest()


def _cache_file(work_dir: Path, coder: SparseCoder, latent: int, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", coder.id)
    return work_dir / "calibration" / f"{safe}-{latent}-{key}.json"


def _cached(path: Path | None, coder: SparseCoder, key: str) -> Strength | None:
    if path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Strength.from_json(data["strength"]) if data.get("key") == key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: search again (and overwrite it)
    with _MEMORY_LOCK:
        try:
            return _MEMORY.get(coder, {}).get(key)
        except TypeError:  # not weakly referenceable
            return None


def _store(path: Path | None, coder: SparseCoder, key: str, strength: Strength) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "coder": coder.id, "strength": strength.to_json()}
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n", fsync=False)
        return
    with _MEMORY_LOCK, contextlib.suppress(TypeError):  # not weakly referenceable: no cache
        _MEMORY.setdefault(coder, {})[key] = strength


def _require(ctx: MethodContext, what: str) -> tuple[Backend, SparseCoder]:
    if ctx.backend is None or ctx.coder is None:
        raise ConfigError(f"{what} needs a backend and a sparse coder in the method context")
    return ctx.backend, ctx.coder


async def calibrate(
    ctx: MethodContext,
    latent: int,
    *,
    target_kl: float,
    prompts: Sequence[str] = NEUTRAL_PROMPTS,
    kind: str = "clamp",
    tol: float = 0.1,
    max_steps: int = 16,
    max_value: float = DEFAULT_MAX_VALUE,
) -> Strength:
    """The value (clamp, or steering scale) at which intervening on `latent` reaches a mean
    KL(clean || intervened) of `target_kl` nats over `prompts`, within `tol * target_kl`.

    One batched forward pass per step (and one clean pass), at most `max_steps` passes, values up
    to `max_value`; a target not reached comes back with `reached=False` and the closest value
    tried. Cached (see the module docstring): a cached strength reports `steps=0`."""
    backend, coder = _require(ctx, "calibrate")
    if kind not in KINDS:
        raise ConfigError(f"unknown intervention kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0 <= latent < coder.d_sae:
        raise ConfigError(f"latent {latent} is outside [0, {coder.d_sae}) of {coder.id}")
    if not prompts:
        raise ConfigError("calibrate needs at least one prompt")
    if target_kl <= 0 or not 0 < tol < 1 or max_steps < 2 or max_value <= 0:
        raise ConfigError(
            f"calibrate needs target_kl > 0, 0 < tol < 1, max_steps >= 2 and max_value > 0 "
            f"(got {target_kl}, {tol}, {max_steps}, {max_value})"
        )
    s = _Search(latent, float(target_kl), kind, float(tol), int(max_steps), float(max_value))
    key = _cache_key(backend, coder, prompts, s)
    work_dir = ctx.work_dir
    path = _cache_file(work_dir, coder, latent, key) if work_dir is not None else None

    def locked() -> Strength:
        # Under the model lock for the whole search: a concurrent caller waits, then reads the
        # cache instead of searching again.
        hit = _cached(path, coder, key)
        if hit is not None:
            return Strength(**{**asdict(hit), "steps": 0})
        found = _search(backend, coder, prompts, s)
        _store(path, coder, key, found)
        return found

    return await run_model(backend, locked)


# --- generation -----------------------------------------------------------------------------------


async def generate_pairs(
    ctx: MethodContext,
    strength: Strength,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[tuple[str, str]]:
    """(clean, intervened) continuations of each prompt at `strength`.

    Both arms of every prompt run in one batched `generate` call: the prompts twice, the edit
    restricted to the second copy (`rows`), sampling from `seed`, under the model lock. Prompts
    of different token lengths share the call: the torch backends left-pad them into one
    KV-cached batch (or, on a stack without left padding, split it by length themselves)."""
    backend, coder = _require(ctx, "generate_pairs")
    texts = list(prompts)
    if not texts:
        return []
    n = len(texts)
    edits = strength.edits(coder, rows=tuple(range(n, 2 * n)))  # the intervened copy

    def both() -> list[tuple[str, str]]:
        made = backend.generate(
            texts * 2, edits, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )
        return list(zip(made[:n], made[n:], strict=True))

    return await run_model(backend, both)
