"""Building `LatentRecord`s: activating examples from the samplers, held-out scoring examples,
and non-activating examples (random, neighbours, similar text), each latent with its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue, NonNegativeInt

from saexplain.errors import ConfigError
from saexplain.methods.seeds import derive_seed
from saexplain.models import (
    Example,
    ExampleKind,
    Frozen,
    LatentRecord,
    LatentRef,
    LatentSelection,
    Settings,
)
from saexplain.sampling.config import RecordConfig, SamplerSpec
from saexplain.sampling.selection import select_latents
from saexplain.sampling.windows import _chunk_peaks, build_pool, sample
from saexplain.store.reader import ActivationStore, LatentActivations

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Embedder = Callable[[Sequence[str]], Any]
"""Texts -> (n, d) array of embeddings (numpy or tensor-like)."""


class _StrTokens(Protocol):
    def str_tokens(self, ids: Sequence[int]) -> list[str]: ...


class RecordOutcome(Frozen):
    """The fate of one selected latent: a record, or why there is none. Never silent."""

    latent: LatentRef
    status: Literal["ok", "rare", "dead"]
    count: NonNegativeInt  # activating tokens in the store
    n_windows: NonNegativeInt  # non-overlapping activating windows available
    record: LatentRecord | None = None
    message: str | None = None


def token_bag_embedding(token_lists: Sequence[Sequence[int]], dim: int = 512) -> FloatArray:
    """A hashed bag-of-tokens embedding (L2-normalised): the fallback for `similar_text`."""
    out = np.zeros((len(token_lists), dim))
    for i, toks in enumerate(token_lists):
        t = np.asarray(toks, dtype=np.int64)
        np.add.at(out[i], (t * 2654435761) % dim, 1.0)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    result: FloatArray = out / np.maximum(norm, 1e-12)
    return result


class RecordBuilder:
    """Builds `LatentRecord`s of one coder from a store.

    `tokenizer` gives the string tokens (a Backend, anything with `str_tokens(ids)`, or a
    function of ids). `embed` (texts -> vectors) powers `similar_text` negatives; without it a
    hashed bag-of-tokens embedding is used and recorded as such. `decoder` (d_sae, d_in)
    overrides the W_dec saved in the store (for `neighbours`).
    """

    def __init__(
        self,
        store: ActivationStore,
        tokenizer: _StrTokens | Callable[[Sequence[int]], Sequence[str]],
        config: RecordConfig | None = None,
        *,
        coder_id: str | None = None,
        embed: Embedder | None = None,
        decoder: Any = None,
    ) -> None:
        self.store = store
        self.info = store.coder(coder_id)
        self.config = config or RecordConfig()
        self.seed = store.settings.seed if self.config.seed is None else self.config.seed
        self._str_tokens: Callable[[Sequence[int]], Sequence[str]] = (
            tokenizer.str_tokens if hasattr(tokenizer, "str_tokens") else tokenizer
        )
        self.embed = embed
        self._decoder = decoder
        self._unit_decoder: FloatArray | None = None
        self.stats = store.stats(self.info.id)
        self.window = min(self.config.window, store.context_length)

    # helpers
    def _rng(self, latent: int, purpose: str) -> np.random.Generator:
        return np.random.default_rng(derive_seed(self.seed, self.info.id, latent, purpose))

    def _example(
        self,
        row: int,
        start: int,
        values: FloatArray | None,
        kind: ExampleKind,
        sampler: str,
        quantile: int | None = None,
        tokens: IntArray | None = None,
    ) -> Example:
        w = self.window
        ids = (self.store.tokens([row])[0] if tokens is None else tokens)[start : start + w]
        id_list = ids.tolist()
        acts = [0.0] * len(id_list) if values is None else values[start : start + w].tolist()
        return Example(
            tokens=tuple(id_list),
            str_tokens=tuple(self._str_tokens(id_list)),
            activations=tuple(acts),
            kind=kind,
            row=row,
            start=start,
            quantile=quantile,
            sampler=sampler,
        )

    def _silent_examples(
        self, windows: Sequence[tuple[int, int]], kind: ExampleKind, samplers: Sequence[str]
    ) -> list[Example]:
        """Examples of windows where this latent is zero (token rows fetched in one read)."""
        if not windows:
            return []
        toks = self.store.tokens([r for r, _ in windows])
        return [
            self._example(r, s, None, kind, name, tokens=toks[i])
            for i, ((r, s), name) in enumerate(zip(windows, samplers, strict=True))
        ]

    def ref(self, latent: int) -> LatentRef:
        return LatentRef(coder_id=self.info.id, hook=self.info.hook, index=latent)

    def build(self, latent: int) -> RecordOutcome:
        """The record of one latent, or its fate (dead) when there is nothing to show."""
        self.store.check_latent(latent, self.info.id)
        cfg = self.config
        stats = self.stats.latent(latent)
        ref = self.ref(latent)
        if stats.count == 0:
            return RecordOutcome(
                latent=ref,
                status="dead",
                count=0,
                n_windows=0,
                message=f"never fired in {self.store.n_tokens} tokens",
            )
        acts = self.store.activations(latent, self.info.id)
        rng = self._rng(latent, "activating")
        keep_top = sum(s.n for s in (*cfg.explanation, *cfg.scoring) if s.name == "top")
        pool, dense = build_pool(acts, self.store.context_length, cfg, rng, keep_top)
        available = np.ones(len(pool), dtype=bool)
        token_rows = dict(
            zip(np.unique(pool.rows).tolist(), self.store.tokens(np.unique(pool.rows)), strict=True)
        )

        def draw(specs: Sequence[SamplerSpec]) -> tuple[list[Example], list[JsonValue]]:
            examples: list[Example] = []
            report: list[JsonValue] = []
            for spec in specs:
                chosen = sample(pool, spec, available, rng, cfg.n_bins)
                report.append({"sampler": spec.name, "requested": spec.n, "got": len(chosen)})
                for i in chosen.tolist():
                    r, s = int(pool.rows[i]), int(pool.starts[i])
                    examples.append(
                        self._example(
                            r,
                            s,
                            dense[r],
                            ExampleKind.ACTIVATING,
                            spec.name,
                            int(pool.bins[i]),
                            tokens=token_rows[r],
                        )
                    )
            return examples, report

        explain, explain_report = draw(cfg.explanation)
        scoring, scoring_report = draw(cfg.scoring)
        negatives, neg_report = self._negatives(latent, acts, explain + scoring)
        status: Literal["ok", "rare"] = "rare" if len(pool) < cfg.rare_below else "ok"
        sampling: Settings = {
            "seed": self.seed,
            "latent_seed": derive_seed(self.seed, self.info.id, latent, "activating"),
            "window": self.window,
            "lead": cfg.lead_tokens,
            "n_bins": cfg.n_bins,
            "bin_edges": [float(e) for e in pool.edges],
            "pool_windows": len(pool),
            "pool_subsampled": pool.subsampled,
            "explanation": explain_report,
            "scoring": scoring_report,
            "negatives": neg_report,
            "split": "explanation samplers draw first; scoring draws from the remaining windows",
        }
        reports = {
            "explanation": explain_report,
            "scoring": scoring_report,
            "negatives": neg_report,
        }
        record = LatentRecord(
            latent=ref,
            stats=stats,
            explanation_examples=tuple(explain),
            scoring_examples=tuple(scoring),
            non_activating=tuple(negatives),
            sampling=sampling,
            shortfall=shortfall(reports),
        )
        message = (
            f"only {len(pool)} activating windows (< {cfg.rare_below})"
            if status == "rare"
            else None
        )
        return RecordOutcome(
            latent=ref,
            status=status,
            count=stats.count,
            n_windows=len(pool),
            record=record,
            message=message,
        )

    def build_many(self, latents: Iterable[int]) -> Iterator[RecordOutcome]:
        for latent in latents:
            yield self.build(int(latent))

    # --- negatives ------------------------------------------------------------------------------

    def _negatives(
        self, latent: int, acts: LatentActivations, positives: Sequence[Example]
    ) -> tuple[list[Example], list[JsonValue]]:
        used: dict[int, list[int]] = {}
        firing: dict[int, IntArray] = {}
        if len(acts):
            bounds = np.flatnonzero(np.diff(acts.rows)) + 1
            for rows, pos in zip(
                np.split(acts.rows, bounds), np.split(acts.pos, bounds), strict=True
            ):
                firing[int(rows[0])] = pos
        out: list[Example] = []
        report: list[JsonValue] = []
        for spec in self.config.negatives:
            if spec.name == "random":
                got, info = self._random_negatives(latent, spec.n, firing, used)
            elif spec.name == "neighbours":
                got, info = self._neighbour_negatives(latent, spec.n, firing, used)
            else:
                got, info = self._similar_negatives(latent, spec.n, firing, used, positives)
            out.extend(got)
            report.append({"builder": spec.name, "requested": spec.n, "got": len(got), **info})
        return out, report

    def _free(
        self, row: int, start: int, firing: dict[int, IntArray], used: dict[int, list[int]]
    ) -> bool:
        """The window does not contain this latent's activations nor overlap a used window."""
        pos = firing.get(row)
        if pos is not None and bool(((pos >= start) & (pos < start + self.window)).any()):
            return False
        return not any(abs(start - s) < self.window for s in used.get(row, ()))

    def _random_windows(
        self,
        latent: int,
        n: int,
        firing: dict[int, IntArray],
        used: dict[int, list[int]],
        purpose: str,
    ) -> list[tuple[int, int]]:
        rng = self._rng(latent, purpose)
        n_rows, hi = self.store.n_contexts, self.store.context_length - self.window
        found: list[tuple[int, int]] = []
        budget = 50 * n + 100
        tries = 0
        while len(found) < n and tries < budget:
            size = min(4 * n + 16, budget - tries)
            rows = rng.integers(n_rows, size=size).tolist()
            starts = rng.integers(hi + 1, size=size).tolist()
            for row, start in zip(rows, starts, strict=True):
                tries += 1
                # contexts where the latent never fires first; any free window as a fallback
                if row in firing and tries < 25 * n:
                    continue
                if self._free(row, start, firing, used):
                    used.setdefault(row, []).append(start)
                    found.append((row, start))
                    if len(found) >= n:
                        break
        return found

    def _random_negatives(
        self, latent: int, n: int, firing: dict[int, IntArray], used: dict[int, list[int]]
    ) -> tuple[list[Example], Settings]:
        found = self._random_windows(latent, n, firing, used, "random")
        return self._silent_examples(found, ExampleKind.RANDOM, ["random"] * len(found)), {}

    def _unit(self) -> FloatArray | None:
        if self._unit_decoder is None:
            w = self._decoder if self._decoder is not None else self.store.decoder(self.info.id)
            if w is None:
                return None
            from saexplain.store._io import to_numpy

            arr = to_numpy(w).astype(np.float64)
            self._unit_decoder = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        return self._unit_decoder

    def neighbours(self, latent: int, k: int | None = None) -> list[tuple[int, float]]:
        """The `k` alive latents whose decoder directions are most similar (cosine) to `latent`."""
        unit = self._unit()
        if unit is None:
            raise ConfigError(
                f"no decoder for {self.info.id}: collect with save_decoder=True or pass decoder="
            )
        cos = unit @ unit[latent]
        cos[latent] = -np.inf
        cos[self.stats.count == 0] = -np.inf
        k = self.config.n_neighbours if k is None else k
        top = np.argsort(-cos, kind="stable")[:k]
        return [(int(i), float(cos[i])) for i in top if np.isfinite(cos[i])]

    def _neighbour_negatives(
        self, latent: int, n: int, firing: dict[int, IntArray], used: dict[int, list[int]]
    ) -> tuple[list[Example], Settings]:
        if self._unit() is None:
            return [], {"skipped": "no decoder saved in the store or given"}
        nbs = self.neighbours(latent)
        if not nbs or n == 0:
            return [], {"neighbours": [[i, c] for i, c in nbs]}
        quota = math.ceil(n / len(nbs))
        windows: list[tuple[int, int]] = []
        names: list[str] = []
        ctx = self.store.context_length
        for nb, _cos in nbs:
            nb_acts = self.store.activations(nb, self.info.id)
            rows, peaks, values = _chunk_peaks(nb_acts, ctx, self.window)
            taken = 0
            for i in np.argsort(-values, kind="stable").tolist():
                if taken >= quota or len(windows) >= n:
                    break
                r = int(rows[i])
                start = min(max(int(peaks[i]) - self.config.lead_tokens, 0), ctx - self.window)
                if not self._free(r, start, firing, used):
                    continue
                used.setdefault(r, []).append(start)
                windows.append((r, start))
                names.append(f"neighbour:{nb}")
                taken += 1
        out = self._silent_examples(windows, ExampleKind.NEIGHBOUR, names)
        return out, {"neighbours": [[i, round(c, 6)] for i, c in nbs]}

    def _similar_negatives(
        self,
        latent: int,
        n: int,
        firing: dict[int, IntArray],
        used: dict[int, list[int]],
        positives: Sequence[Example],
    ) -> tuple[list[Example], Settings]:
        if not positives or n == 0:
            return [], {"skipped": "no activating examples to be similar to"}
        scratch = {r: list(s) for r, s in used.items()}
        cands = self._random_windows(
            latent, n * self.config.similar_pool, firing, scratch, "similar"
        )
        if not cands:
            return [], {"skipped": "no candidate windows"}
        rows = np.asarray([r for r, _ in cands], dtype=np.int64)
        toks = self.store.tokens(rows)
        cand_ids = [toks[i, s : s + self.window] for i, (_, s) in enumerate(cands)]
        if self.embed is not None:
            from saexplain.store._io import to_numpy

            texts = ["".join(self._str_tokens(ids.tolist())) for ids in cand_ids]
            pos_texts = [e.text for e in positives]
            emb = to_numpy(self.embed([*pos_texts, *texts])).astype(np.float64)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            embedder = getattr(self.embed, "__name__", type(self.embed).__name__)
        else:
            emb = token_bag_embedding(
                [list(e.tokens) for e in positives] + [c.tolist() for c in cand_ids]
            )
            embedder = "token-bag (no embedding model given)"
        pos_emb, cand_emb = emb[: len(positives)], emb[len(positives) :]
        sim = (cand_emb @ pos_emb.T).max(axis=1)
        chosen: list[tuple[int, int]] = []
        for i in np.argsort(-sim, kind="stable").tolist():
            r, s = cands[i]
            if len(chosen) >= n:
                break
            if not self._free(r, s, firing, used):
                continue
            used.setdefault(r, []).append(s)
            chosen.append((r, s))
        out = self._silent_examples(
            chosen, ExampleKind.SIMILAR_TEXT, ["similar_text"] * len(chosen)
        )
        return out, {"embedder": embedder, "candidates": len(cands)}


def shortfall(reports: Mapping[str, Sequence[JsonValue]]) -> dict[str, int]:
    """Examples missing per split, from the samplers' reports (`requested` and `got` each);
    splits that got every example they asked for are left out."""
    out: dict[str, int] = {}
    for split, entries in reports.items():
        missing = 0
        for entry in entries:
            if isinstance(entry, dict):
                requested, got = entry.get("requested"), entry.get("got")
                if isinstance(requested, int) and isinstance(got, int):
                    missing += max(0, requested - got)
        if missing:
            out[split] = missing
    return out


def build_records(
    store: ActivationStore,
    tokenizer: _StrTokens | Callable[[Sequence[int]], Sequence[str]],
    latents: Iterable[int] | LatentSelection | None = None,
    config: RecordConfig | None = None,
    *,
    coder_id: str | None = None,
    embed: Embedder | None = None,
) -> Iterator[RecordOutcome]:
    """Records of the selected latents (all by default), one `RecordOutcome` per latent."""
    builder = RecordBuilder(store, tokenizer, config, coder_id=coder_id, embed=embed)
    if latents is None or isinstance(latents, LatentSelection):
        report = select_latents(
            store,
            latents,
            coder_id=builder.info.id,
            seed=builder.seed,
            rare_below=builder.config.rare_below,
        )
        latents = report.latents
    yield from builder.build_many(latents)
