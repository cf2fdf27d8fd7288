"""SAE-to-SAE similarity: match the latents of two coders, then compare their explanations.

Matching is a one-to-one assignment maximising the summed decoder cosine similarity:

- `match_exact`: the full (d_a, d_b) cosine matrix and the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`); memory ~ 8 * d_a * d_b bytes.
- `match_blockwise`: for each latent of A the `k` most similar latents of B, computed block by
  block (the full matrix never exists), then a minimum-weight full bipartite matching on that
  sparse graph (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`); memory
  ~ d_a * k * 16 bytes plus one block. When the top-k graph has no full matching (rare, small
  k), the latents left out are matched exactly among themselves (or greedily when that remainder
  is itself too large).

`match_coders` picks exact below `exact_limit` latents and blockwise above it. Figures measured on
the development machine are in docs/analysis.md (benchmarks/similarity.py).

`compare_explanations` embeds the explanations of matched pairs with any `embed(texts) -> array`
callable and gives each pair's cosine; `random_pair_similarity` is the baseline to read it against.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import ConfigError, DimensionMismatchError

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Embedder = Callable[[Sequence[str]], Any]

#: widths (d_a * d_b) above which `match_coders` switches to the blockwise matcher: an
#: 8192 x 8192 float64 cost matrix is 0.5 GiB and the Hungarian solve takes seconds there.
EXACT_LIMIT = 8192 * 8192


def _scipy(what: str) -> Any:
    """Import scipy lazily: it is an optional dependency of the core (`saexplain[analysis]`)."""
    try:
        # importlib: scipy ships no type stubs and stays optional; the result is used as Any
        for module in ("scipy.optimize", "scipy.sparse", "scipy.sparse.csgraph"):
            importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs scipy: pip install 'saexplain[analysis]'") from None
    return importlib.import_module("scipy")


@dataclass(frozen=True)
class Matching:
    """Matched latents `a[i]` <-> `b[i]` with their decoder cosine, sorted by latent of A."""

    a: IntArray
    b: IntArray
    cosine: FloatArray
    method: str  # "exact" or "blockwise"

    def __len__(self) -> int:
        return len(self.a)

    def as_dict(self) -> dict[int, int]:
        return {int(x): int(y) for x, y in zip(self.a, self.b, strict=True)}


def unit_rows(w: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit norm (a zero row stays zero), as float32."""
    m = np.asarray(w, dtype=np.float32)
    if m.ndim != 2:
        raise DimensionMismatchError(f"a decoder must be 2-D (d_sae, d_model), got {m.shape}")
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    out: FloatArray = np.divide(m, norm, out=np.zeros_like(m), where=norm > 0)
    return out


def _check(a: FloatArray, b: FloatArray) -> None:
    if a.shape[1] != b.shape[1]:
        raise DimensionMismatchError(
            f"decoders write different widths: {a.shape[1]} vs {b.shape[1]} (d_model)"
        )


def _sorted(a: npt.ArrayLike, b: npt.ArrayLike, cos: npt.ArrayLike, method: str) -> Matching:
    ai, bi = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    order = np.argsort(ai, kind="stable")
    return Matching(ai[order], bi[order], np.asarray(cos, dtype=np.float32)[order], method)


def match_exact(dec_a: npt.ArrayLike, dec_b: npt.ArrayLike) -> Matching:
    """Hungarian matching on the full decoder cosine matrix (min(d_a, d_b) pairs)."""
    scipy = _scipy("matching latents")
    a, b = unit_rows(dec_a), unit_rows(dec_b)
    _check(a, b)
    sim = a @ b.T
    rows, cols = scipy.optimize.linear_sum_assignment(sim, maximize=True)
    return _sorted(rows, cols, sim[rows, cols], "exact")


def top_k_candidates(
    a: FloatArray, b: FloatArray, k: int, *, block: int = 2048
) -> tuple[IntArray, FloatArray]:
    """For each row of `a`, the `k` rows of `b` with the largest cosine, and those cosines;
    computed `block` rows of `a` at a time (memory: block * d_b floats)."""
    k = min(k, len(b))
    idx = np.zeros((len(a), k), dtype=np.int64)
    val = np.zeros((len(a), k), dtype=np.float32)
    for lo in range(0, len(a), block):
        sim = a[lo : lo + block] @ b.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        idx[lo : lo + block] = part
        val[lo : lo + block] = np.take_along_axis(sim, part, axis=1)
    return idx, val


def match_blockwise(
    dec_a: npt.ArrayLike, dec_b: npt.ArrayLike, *, k: int = 8, block: int = 2048
) -> Matching:
    """Matching on the sparse top-`k` candidate graph (never the full d_a x d_b matrix).

    Every latent of the smaller side is matched. The result equals the exact matching whenever
    the exact one only uses top-k candidates (the case for coders that share their latents)."""
    scipy = _scipy("matching latents")
    a, b = unit_rows(dec_a), unit_rows(dec_b)
    _check(a, b)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    swap = len(a) > len(b)  # match the smaller side fully: rows of the graph
    if swap:
        a, b = b, a
    idx, val = top_k_candidates(a, b, k, block=block)
    rows = np.repeat(np.arange(len(a), dtype=np.int64), idx.shape[1])
    # weights must be positive for the sparse matcher (a stored zero is an edge): cosine in
    # [-1, 1] -> cost 2 - cos in [1, 3]; minimising it maximises the summed cosine
    cost = scipy.sparse.csr_matrix(
        (2.0 - val.ravel().astype(np.float64), (rows, idx.ravel())), shape=(len(a), len(b))
    )
    try:
        r, c = scipy.sparse.csgraph.min_weight_full_bipartite_matching(cost)
        r, c = np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64)
    except ValueError:  # no full matching within the top-k: finish the rest apart
        r, c = _partial_then_rest(scipy, cost, a, b)
    cos = np.einsum("ij,ij->i", a[r], b[c])
    if swap:
        r, c = c, r
    return _sorted(r, c, cos, "blockwise")


def _partial_then_rest(
    scipy: Any, cost: Any, a: FloatArray, b: FloatArray
) -> tuple[IntArray, IntArray]:
    """A maximum matching inside the graph, then the unmatched rows against the unused columns
    (Hungarian when small enough, greedy otherwise)."""
    match = scipy.sparse.csgraph.maximum_bipartite_matching(cost, perm_type="column")
    r = np.flatnonzero(match >= 0)
    c = np.asarray(match[r], dtype=np.int64)
    free_r = np.setdiff1d(np.arange(len(a)), r)
    free_c = np.setdiff1d(np.arange(len(b)), c)
    if len(free_r) * len(free_c) <= EXACT_LIMIT:
        sim = a[free_r] @ b[free_c].T
        rr, cc = scipy.optimize.linear_sum_assignment(sim, maximize=True)
        extra_r, extra_c = free_r[rr], free_c[cc]
    else:
        used: set[int] = set()
        pairs = []
        for i in free_r:
            order = np.argsort(-(b[free_c] @ a[i]))
            j = next(int(free_c[o]) for o in order if int(free_c[o]) not in used)
            used.add(j)
            pairs.append((int(i), j))
        extra_r = np.asarray([p[0] for p in pairs], dtype=np.int64)
        extra_c = np.asarray([p[1] for p in pairs], dtype=np.int64)
    return np.concatenate([r, extra_r]), np.concatenate([c, extra_c])


def match_coders(
    dec_a: npt.ArrayLike,
    dec_b: npt.ArrayLike,
    *,
    method: str = "auto",
    k: int = 8,
    exact_limit: int = EXACT_LIMIT,
) -> Matching:
    """`method`: "exact", "blockwise" or "auto" (exact when d_a * d_b <= `exact_limit`)."""
    if method not in ("auto", "exact", "blockwise"):
        raise ConfigError(f"method must be auto, exact or blockwise, got {method!r}")
    na, nb = np.shape(dec_a)[0], np.shape(dec_b)[0]
    if method == "exact" or (method == "auto" and na * nb <= exact_limit):
        return match_exact(dec_a, dec_b)
    return match_blockwise(dec_a, dec_b, k=k)


# --- explanations -------------------------------------------------------------------------------


def _embed(embed: Embedder, texts: Sequence[str]) -> FloatArray:
    vecs = unit_rows(np.asarray(embed(list(texts)), dtype=np.float32))
    if len(vecs) != len(texts):
        raise ConfigError(f"the embedder returned {len(vecs)} vectors for {len(texts)} texts")
    return vecs


@dataclass(frozen=True)
class PairRow:
    """One row of the comparison table."""

    latent_a: int
    latent_b: int
    cosine: float  # decoder cosine
    explanation_a: str | None
    explanation_b: str | None
    similarity: float | None  # explanation embedding cosine; None without both explanations

    def to_json(self) -> dict[str, Any]:
        return {
            "latent_a": self.latent_a,
            "latent_b": self.latent_b,
            "cosine": round(self.cosine, 6),
            "explanation_a": self.explanation_a,
            "explanation_b": self.explanation_b,
            "similarity": None if self.similarity is None else round(self.similarity, 6),
        }


@dataclass(frozen=True)
class Comparison:
    """Matched pairs with their explanation similarity, and the random-pair baseline."""

    rows: tuple[PairRow, ...]
    method: str
    baseline: float | None  # mean explanation similarity of random (unmatched) pairs

    @property
    def mean_similarity(self) -> float | None:
        sims = [r.similarity for r in self.rows if r.similarity is not None]
        return float(np.mean(sims)) if sims else None

    def plot_data(self) -> dict[str, Any]:
        """Data for a scatter plot (decoder cosine vs explanation similarity) in the report."""
        pts = [(r.cosine, r.similarity) for r in self.rows if r.similarity is not None]
        return {
            "x": [round(x, 6) for x, _ in pts],
            "y": [round(y, 6) for _, y in pts],
            "x_label": "decoder cosine",
            "y_label": "explanation similarity",
            "baseline": self.baseline,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_pairs": len(self.rows),
            "mean_similarity": self.mean_similarity,
            "random_baseline": self.baseline,
            "pairs": [r.to_json() for r in self.rows],
            "plot": self.plot_data(),
        }


def random_pair_similarity(
    texts_a: Sequence[str], texts_b: Sequence[str], embed: Embedder, *, n: int = 1000, seed: int = 0
) -> float | None:
    """Mean embedding cosine of explanations paired at random (the chance level)."""
    if not texts_a or not texts_b:
        return None
    va, vb = _embed(embed, texts_a), _embed(embed, texts_b)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(va), size=n)
    j = rng.integers(0, len(vb), size=n)
    return float(np.mean(np.einsum("ij,ij->i", va[i], vb[j])))


def compare_explanations(
    matching: Matching,
    explanations_a: Mapping[int, str],
    explanations_b: Mapping[int, str],
    embed: Embedder | None = None,
    *,
    seed: int = 0,
) -> Comparison:
    """The comparison table of `matching`, with each pair's explanation similarity when both
    latents have an explanation and `embed` is given; sorted by decoder cosine, highest first."""
    cosines = matching.cosine.tolist()
    pairs = list(zip(matching.a.tolist(), matching.b.tolist(), cosines, strict=True))
    both = [(a, b) for a, b, _ in pairs if a in explanations_a and b in explanations_b]
    sims: dict[tuple[int, int], float] = {}
    baseline = None
    if embed is not None and both:
        va = _embed(embed, [explanations_a[a] for a, _ in both])
        vb = _embed(embed, [explanations_b[b] for _, b in both])
        sims = dict(zip(both, np.einsum("ij,ij->i", va, vb).tolist(), strict=True))
        # the baseline pairs the same explanations at random
        rng = np.random.default_rng(seed)
        n = max(1000, len(both))
        i, j = rng.integers(0, len(va), size=n), rng.integers(0, len(vb), size=n)
        off = i != j  # a random pair, not a matched one
        if off.any():
            baseline = float(np.mean(np.einsum("ij,ij->i", va[i[off]], vb[j[off]])))
    rows = tuple(
        PairRow(a, b, float(cos), explanations_a.get(a), explanations_b.get(b), sims.get((a, b)))
        for a, b, cos in sorted(pairs, key=lambda p: -p[2])
    )
    return Comparison(rows, matching.method, baseline)


# --- runs ---------------------------------------------------------------------------------------


def run_decoder(run: Any, coder_id: str | None = None) -> tuple[str, FloatArray]:
    """(coder id, W_dec) of a run's coder, read from the run's activation store (collection
    saves the decoder there). `run` is a `RunResults` or a run directory."""
    from pathlib import Path

    from saexplain.analysis.search import as_results
    from saexplain.store.reader import ActivationStore

    results = as_results(run)
    if results.run_dir is None:
        raise ConfigError("the run has no directory to read its activation store from")
    store_dir = results.config.get("store_dir")
    path = Path(store_dir) if store_dir else results.run_dir / "store"
    if not (path / "manifest.json").exists():
        raise ConfigError(f"no activation store at {path}: the run collected nothing to compare")
    store = ActivationStore(path)
    info = store.coder(coder_id)
    dec = store.decoder(info.id)
    if dec is None:
        raise ConfigError(f"the store {path} did not save the decoder of {info.id}")
    return info.id, np.asarray(dec, dtype=np.float32)


def compare_runs(
    run_a: Any,
    run_b: Any,
    *,
    coder_a: str | None = None,
    coder_b: str | None = None,
    embed: Embedder | None = None,
    explainer: str | None = None,
    method: str = "auto",
    k: int = 8,
) -> Comparison:
    """Match the coders of two runs (or two coders of one run: pass the same run twice) and
    compare their explanations. Without `embed`, the embeddings plugin's embedder when installed;
    otherwise the table has no explanation similarity."""
    from saexplain.analysis.search import as_results, default_embedder, explanations_of

    ra, rb = as_results(run_a), as_results(run_b)
    id_a, dec_a = run_decoder(ra, coder_a)
    id_b, dec_b = run_decoder(rb, coder_b)
    matching = match_coders(dec_a, dec_b, method=method, k=k)
    exp_a = {r.index: t for r, t in explanations_of(ra, explainer=explainer, coder_id=id_a).items()}
    exp_b = {r.index: t for r, t in explanations_of(rb, explainer=explainer, coder_id=id_b).items()}
    if embed is None and exp_a and exp_b:
        try:
            embed = default_embedder()
        except ConfigError:
            embed = None  # the decoder table stands alone; the CLI says so
    return compare_explanations(matching, exp_a, exp_b, embed)
