"""Per-latent filters computed from the activation store before any LLM call.

Three heuristics flag latents an LLM explanation adds little to (or that cannot be explained):

- `dead` / `rare`: the latent fired on no token / on fewer than `min_firings` tokens of the store;
- `positional`: firing (binary) shares more than `positional_threshold` nats of mutual information
  with the absolute position in the context (Voita et al. 2023, used by the EleutherAI blog);
- `unigram`: at most `unigram_max_tokens` distinct tokens carry the top `unigram_mass` of the
  latent's activation mass, and the latent still fires on those tokens when each is inserted in
  contexts of random tokens (run through the backend) in more than `unigram_min_fraction` of them.

`compute_filters` returns one `LatentFilters` per latent; `FilterConfig.skip` names the flags whose
latents a run does not explain (the pipeline writes every latent's flags to `latents.jsonl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saexplain.errors import ConfigError
from saexplain.methods import TokenBatch, derive_seed, to_numpy

if TYPE_CHECKING:
    from saexplain.protocols import Backend, SparseCoder
    from saexplain.store.reader import ActivationStore

FlagName = Literal["dead", "rare", "positional", "unigram"]

# Minimum firings for a latent to count as alive, per preset (a latent below it is "rare"):
# - saebench: SAEBench autointerp `AutoInterpConfig.dead_latent_threshold = 15`, latents are kept
#   when their firing count is > 15 (sae_bench/evals/autointerp/eval_config.py and main.py), so
#   16 firings are needed; METHODS.md "a latent with fewer than 15 firings is dead".
# - eleuther: delphi / sae-auto-interp `min_examples = 200` ("Minimum number of examples for a
#   feature to be included", FeatureConfig; the paper "Automatically interpreting millions of
#   features" reports the share of latents firing fewer than 200 times). delphi counts examples;
#   we count firing tokens, an upper bound on its examples.
RARE_PRESETS: dict[str, int] = {"saebench": 16, "eleuther": 200}


class FilterConfig(BaseModel):
    """The `filters:` section of a run config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    skip: tuple[FlagName, ...] = ()  # flags whose latents are not explained
    rare_preset: Literal["saebench", "eleuther"] = "saebench"
    min_firings: int | None = Field(default=None, ge=1)  # overrides the preset's threshold
    positional_threshold: float = Field(default=0.05, ge=0.0)  # nats
    position_bins: int = Field(default=64, ge=2)
    unigram: bool = True  # compute the unigram flag (needs the backend and the coder)
    unigram_max_tokens: int = Field(default=20, ge=1)
    unigram_mass: float = Field(default=0.8, gt=0.0, le=1.0)
    unigram_contexts: int = Field(default=2, ge=1)  # random contexts per candidate token
    unigram_context_length: int = Field(default=20, ge=2)  # tokens per random context
    unigram_min_fraction: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _unigram_needed(self) -> FilterConfig:
        if "unigram" in self.skip and not self.unigram:
            raise ValueError("skip lists unigram but unigram is false")
        return self

    @property
    def threshold(self) -> int:
        """Firings a latent needs not to be flagged rare."""
        return self.min_firings if self.min_firings is not None else RARE_PRESETS[self.rare_preset]

    @classmethod
    def parse(cls, data: object) -> FilterConfig:
        """From a config mapping; a bad value is a one-line `ConfigError` naming the key."""
        if isinstance(data, FilterConfig):
            return data
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = f"filters.{where}: {first['msg']}" if where else str(first["msg"])
            raise ConfigError(message) from None


@dataclass(frozen=True)
class LatentFilters:
    """What the filters found for one latent; `flags` names those that fired."""

    latent: int
    count: int
    positional_mi: float  # nats
    unigram_tokens: int | None = None  # distinct tokens in the top activation mass
    unigram_fraction: float | None = None  # firing fraction in random contexts (candidates only)
    flags: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flags": list(self.flags),
            "count": self.count,
            "positional_mi": round(self.positional_mi, 6),
        }
        if self.unigram_tokens is not None:
            out["unigram_tokens"] = self.unigram_tokens
        if self.unigram_fraction is not None:
            out["unigram_fraction"] = round(self.unigram_fraction, 6)
        return out


def _entropy(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Binary entropy in nats, elementwise (0 at p = 0 or 1)."""
    p = np.clip(p, 0.0, 1.0)
    out = np.zeros_like(p)
    inner = (p > 0) & (p < 1)
    q = p[inner]
    out[inner] = -(q * np.log(q) + (1 - q) * np.log(1 - q))
    return out


def positional_mi(fired: npt.ArrayLike, eligible: npt.ArrayLike) -> float:
    """Mutual information (nats) between firing and position bin: `fired[b]` firings among the
    `eligible[b]` tokens of bin b. I(F; P) = H(F) - sum_b P(b) H(F | b)."""
    k = np.asarray(fired, dtype=np.float64)
    n = np.asarray(eligible, dtype=np.float64)
    total = n.sum()
    if total <= 0 or k.sum() <= 0:
        return 0.0
    rate = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    h = float(_entropy(np.asarray([k.sum() / total]))[0])
    return max(0.0, h - float((n / total) @ _entropy(rate)))


def _eligible_positions(store: ActivationStore, exclude_bos: bool) -> npt.NDArray[np.int64]:
    """Tokens a latent could fire on, per position: every context, less BOS tokens when the
    coder excludes them (the store never records a firing there: counting them would make every
    latent look a little positional)."""
    ctx = store.context_length
    bos = store.settings.bos_token_id
    eligible = np.full(ctx, store.n_contexts, dtype=np.int64)
    if exclude_bos and bos is not None:
        step = 4096
        for lo in range(0, store.n_contexts, step):
            ids = store.tokens(np.arange(lo, min(lo + step, store.n_contexts)))
            eligible -= (ids == bos).sum(axis=0)
    return eligible


def _bins(ctx: int, n_bins: int) -> npt.NDArray[np.int64]:
    """The bin of each position: equal-width bins, one per position when the context is short."""
    n = min(n_bins, ctx)
    return (np.arange(ctx, dtype=np.int64) * n) // ctx


def _top_mass_tokens(values: npt.NDArray[np.float32], mass: float) -> npt.NDArray[np.intp]:
    """Indices of the largest activations that together hold `mass` of the total."""
    order = np.argsort(-values, kind="stable")
    cum = np.cumsum(values[order], dtype=np.float64)
    n = int(np.searchsorted(cum, mass * cum[-1], side="left")) + 1
    return order[: min(n, len(order))]


def compute_filters(
    store: ActivationStore,
    latents: Sequence[int],
    config: FilterConfig | None = None,
    *,
    coder_id: str | None = None,
    backend: Backend | None = None,
    coder: SparseCoder | None = None,
    seed: int = 0,
) -> dict[int, LatentFilters]:
    """Filters of `latents` (indices of the store's coder `coder_id`).

    The unigram check runs the model: it needs `backend` and `coder`; without them (or with
    `config.unigram` false) no latent is flagged unigram. The caller holds the model lock."""
    cfg = config or FilterConfig()
    info = store.coder(coder_id)
    counts = store.counts(info.id)
    ctx = store.context_length
    bins = _bins(ctx, cfg.position_bins)
    eligible = np.bincount(bins, weights=_eligible_positions(store, info.exclude_bos))
    run_unigram = cfg.unigram and backend is not None and coder is not None
    pool = _random_token_pool(store) if run_unigram else None
    out: dict[int, LatentFilters] = {}
    for latent in (int(x) for x in latents):
        store.check_latent(latent, info.id)
        count = int(counts[latent])
        flags: list[str] = []
        if count == 0:
            flags.append("dead")
        elif count < cfg.threshold:
            flags.append("rare")
        mi, n_tokens, fraction = 0.0, None, None
        if count:
            acts = store.activations(latent, info.id)
            fired = np.bincount(bins[acts.pos], minlength=len(eligible))
            mi = positional_mi(fired, eligible)
            if mi > cfg.positional_threshold:
                flags.append("positional")
            top = _top_mass_tokens(acts.values, cfg.unigram_mass)
            token_ids = store.tokens(acts.rows[top])[np.arange(len(top)), acts.pos[top]]
            distinct = np.unique(token_ids)
            n_tokens = len(distinct)
            if run_unigram and n_tokens <= cfg.unigram_max_tokens:
                assert backend is not None and coder is not None and pool is not None
                fraction = unigram_fraction(
                    backend,
                    coder,
                    latent,
                    [int(t) for t in distinct],
                    pool,
                    contexts=cfg.unigram_contexts,
                    length=cfg.unigram_context_length,
                    bos=store.settings.bos_token_id if store.settings.prepend_bos else None,
                    seed=derive_seed(seed, info.id, latent, "unigram-filter"),
                )
                if fraction > cfg.unigram_min_fraction:
                    flags.append("unigram")
        out[latent] = LatentFilters(latent, count, mi, n_tokens, fraction, tuple(flags))
    return out


def _random_token_pool(store: ActivationStore, size: int = 65536) -> npt.NDArray[np.int64]:
    """Distinct ordinary tokens of the store (never BOS), to draw random contexts from: the
    vocabulary as the dataset uses it, so no unused or special token is inserted."""
    rows = np.arange(min(store.n_contexts, max(1, size // max(store.context_length, 1))))
    ids = np.unique(store.tokens(rows))
    bos = store.settings.bos_token_id
    pool = ids[ids != bos] if bos is not None else ids
    if not len(pool):
        raise ConfigError("the store holds no tokens to build random contexts from")
    return pool


def unigram_fraction(
    backend: Backend,
    coder: SparseCoder,
    latent: int,
    tokens: Sequence[int],
    pool: npt.NDArray[np.int64],
    *,
    contexts: int = 2,
    length: int = 20,
    bos: int | None = None,
    seed: int = 0,
) -> float:
    """Fraction of random contexts in which `latent` fires on the inserted token.

    For each token, `contexts` contexts of `length - 1` tokens drawn from `pool` with the token
    inserted at a random position (after a BOS when `bos` is given); one batched forward pass."""
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = []
    where: list[int] = []
    for token in tokens:
        for _ in range(contexts):
            body = [int(t) for t in rng.choice(pool, size=length - 1)]
            at = int(rng.integers(0, length))
            body.insert(at, int(token))
            head = [bos] if bos is not None else []
            rows.append(head + body)
            where.append(at + len(head))
    if not rows:
        return 0.0
    batch = TokenBatch.from_lists(rows)
    acts = backend.latent_acts(batch, [coder], latents={coder.id: [latent]})[coder.id]
    row = np.asarray(to_numpy(acts.row), dtype=np.int64)
    pos = np.asarray(to_numpy(acts.pos), dtype=np.int64)
    value = np.asarray(to_numpy(acts.value), dtype=np.float64)
    target = np.asarray(where, dtype=np.int64)
    hit = np.zeros(len(rows), dtype=bool)
    on_token = (value > 0) & (pos == target[row])
    hit[row[on_token]] = True
    return float(hit.mean())


def skipped(filters: dict[int, LatentFilters], skip: Sequence[str]) -> dict[int, list[str]]:
    """Latents with a flag in `skip`, and which of their flags are skipped."""
    wanted = set(skip)
    out: dict[int, list[str]] = {}
    for latent, f in filters.items():
        hits = [flag for flag in f.flags if flag in wanted]
        if hits:
            out[latent] = hits
    return out
