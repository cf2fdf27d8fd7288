"""Per-method summary statistics of a run, written to `summary.json`.

For every (explainer, scorer) pair: the number of valid scores `n`, the median and interquartile
range (numpy's default linear-interpolation percentiles), the mean with a seeded percentile
bootstrap 95% interval, the error rate, and the tokens and cost the scorer spent. For every
explainer: how many explanations were not ok, and its tokens and cost.

A score counts as an error when its status is not ok or its value is None or not finite; errors
are counted in `error_rate = n_errors / n_total` and excluded from every statistic, never averaged
in as a number. `n_failed` and `n_error` split them by status: `failed` results (the method ran
and produced nothing usable) are final, `error` results (an outage, a crash, the spend cap) are
retried by a rerun. A partial score (ok, but computed from fewer items because some errored)
counts as a value and in `n_partial`; a resumed run scores it again.

Binary scorers (detection, fuzzing, ...) report two headline metrics: the score's value
(balanced accuracy) is summarised as above, and `auroc` summarises, the same way, the AUROC of
each valid score that has one (`metrics["auroc"]`, from P(yes) where the provider gave logprobs).
`n_constant` counts the valid scores whose answers were all alike
(`evidence["constant_predictions"]`, split by answer in `constant_predictions`): their balanced
accuracy reads 0.5 because the scorer model did not discriminate.

Scorers that intervene at calibrated strengths (`intervention`) name metrics `kl=<target>/<name>`;
`by_target` summarises each (n, mean, its interval), so the score stands beside its baselines
(`random_latents`, `random_coder`, `decoys`) and the share of latents whose target was reached,
per target KL; the terminal table and the HTML report show it.

`records` counts the records that hold fewer examples than the samplers asked for
(`LatentRecord.shortfall`), per split, and the examples missing.

Usage is summed over every line of the result files, earlier attempts included: a rerun that
retries a result appends a new line whose replayed answers cost $0 (`cached_calls`), so `cost_usd`
and `calls` are what was paid, once, however often the run was resumed. Per method, the lines of
its current configuration count; the totals (`usage`) count every line of the run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saexplain.models import Explanation, Score, Status, Usage
from saexplain.report._io import atomic_write_text
from saexplain.report.results import SUMMARY_FILE, RunResults, valid_value
from saexplain.rundir import MethodIds

SUMMARY_FORMAT = 1
_CHUNK = 4_000_000  # bootstrap draws per chunk: bounds memory for large runs


def bootstrap_mean_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (resampling with replacement); None if empty."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // x.size)
    means = np.empty(n_resamples, dtype=np.float64)
    done = 0
    while done < n_resamples:
        k = min(per_chunk, n_resamples - done)
        idx = rng.integers(0, x.size, size=(k, x.size))
        means[done : done + k] = x[idx].mean(axis=1)
        done += k
    alpha = (1 - confidence) / 2
    lo, hi = np.clip(np.quantile(means, [alpha, 1 - alpha]), x.min(), x.max())  # float rounding
    return float(lo), float(hi)


def describe(values: Sequence[float], *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """n, median, q25, q75, iqr, mean, mean_ci95, std, min, max of finite values (None if empty)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        keys = ("median", "q25", "q75", "iqr", "mean", "mean_ci95", "std", "min", "max")
        return {"n": 0, **dict.fromkeys(keys)}
    q25, median, q75 = (float(v) for v in np.percentile(x, [25, 50, 75]))
    ci = bootstrap_mean_ci(x.tolist(), n_resamples=n_resamples, seed=seed)
    return {
        "n": int(x.size),
        "median": median,
        "q25": q25,
        "q75": q75,
        "iqr": q75 - q25,
        "mean": float(x.mean()),
        "mean_ci95": None if ci is None else list(ci),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
    }


def usage_dict(usages: Iterable[Usage]) -> dict[str, Any]:
    """Usages added up, as the summary writes them."""
    total = sum(usages, Usage())
    return {
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "total_tokens": total.total_tokens,
        "cost_usd": total.cost_usd,
        "calls": total.calls,
        "cached_calls": total.cached_calls,
    }


def summarize(
    results: RunResults, *, n_resamples: int = 2000, seed: int | None = None
) -> dict[str, Any]:
    """The summary dict (the content of `summary.json`); `seed` defaults to the run's seed."""
    from saexplain import __version__

    seed = results.seed if seed is None else seed
    by_status = Counter(res.status or "unknown" for res in results)

    all_exps, all_scores = results.explanations, results.scores
    # every attempt's lines (what was paid), of the methods' current configurations
    ids = MethodIds.from_manifest(results.manifest)
    exp_lines = [e for e in results.explanation_lines if ids is None or ids.is_current(e)]
    score_lines = [s for s in results.score_lines if ids is None or ids.is_current(s)]
    explainers: dict[str, Any] = {}
    for name in results.explainers:
        exps = [e for e in all_exps if e.explainer == name]
        n_err = sum(e.status is not Status.OK for e in exps)
        explainers[name] = {
            "n_total": len(exps),
            "n_ok": len(exps) - n_err,
            "n_errors": n_err,
            **_by_status(exps),
            "error_rate": n_err / len(exps) if exps else None,
            "usage": usage_dict(e.usage for e in exp_lines if e.explainer == name),
        }

    methods: dict[str, Any] = {}
    for explainer, scorer in results.methods:
        scores = [s for s in all_scores if s.explainer == explainer and s.scorer == scorer]
        values = [v for v in (valid_value(s) for s in scores) if v is not None]
        n_err = len(scores) - len(values)
        valid = [s for s in scores if valid_value(s) is not None]
        constant = Counter(a for s in valid if (a := _constant_answer(s)) is not None)
        methods[f"{explainer}/{scorer}"] = {
            "explainer": explainer,
            "scorer": scorer,
            "n_total": len(scores),
            "n_errors": n_err,
            **_by_status(scores),
            "error_rate": n_err / len(scores) if scores else None,
            **describe(values, n_resamples=n_resamples, seed=seed),
            # the second headline of binary scorers, and why some of their values read 0.5
            "auroc": describe(_aurocs(valid), n_resamples=n_resamples, seed=seed),
            "n_constant": sum(constant.values()),
            "constant_predictions": dict(sorted(constant.items())),
            # answers inside otherwise valid scores that errored (excluded by the scorer)
            "prediction_errors": sum(s.n_errors for s in scores),
            "n_partial": sum(s.partial for s in scores),
            # output-side scorers (`intervention`): the score beside its baselines, per target KL
            "by_target": _by_target(valid, n_resamples=n_resamples, seed=seed),
            "usage": usage_dict(
                s.usage for s in score_lines if (s.explainer, s.scorer) == (explainer, scorer)
            ),
        }

    every_exp = [e.usage for e in results.explanation_lines]
    every_score = [s.usage for s in results.score_lines]
    exp_usage, score_usage = usage_dict(every_exp), usage_dict(every_score)
    total = usage_dict([*every_exp, *every_score])
    return {
        "format": SUMMARY_FORMAT,
        "saexplain_version": __version__,
        "run": {
            "saexplain_version": results.manifest.get("saexplain_version"),
            "seed": seed,
            "model": results.manifest.get("model", results.config.get("model")),
            "coder": results.manifest.get("coder", results.config.get("coder")),
        },
        "latents": {"n": len(results), "by_status": dict(sorted(by_status.items()))},
        "records": _shortfalls(results),
        "explainers": explainers,
        "methods": methods,
        "usage": {"explanations": exp_usage, "scores": score_usage, "total": total},
        # spend, calls, retries and provider errors over every attempt at the run (the ledger's)
        "provider_calls": results.manifest.get("provider_calls"),
        "bootstrap": {"n_resamples": n_resamples, "confidence": 0.95, "seed": seed},
    }


def _aurocs(scores: Sequence[Score]) -> list[float]:
    """The finite AUROCs of `scores` (binary scorers with per-item probabilities)."""
    found = (s.metrics.get("auroc") for s in scores)
    return [a for a in found if a is not None and math.isfinite(a)]


def _by_target(scores: Sequence[Score], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Metrics named `kl=<target>/<name>` (a score and its baselines at one intervention
    strength), summarised per target and name: n, mean and its bootstrap interval."""
    found: dict[str, dict[str, list[float]]] = {}
    for score in scores:
        for key, v in score.metrics.items():
            target, sep, name = key.partition("/")
            if sep and target.startswith("kl=") and v is not None and math.isfinite(v):
                found.setdefault(target, {}).setdefault(name, []).append(v)
    out: dict[str, Any] = {}
    for target, names in sorted(found.items()):
        stats = {n: describe(v, n_resamples=n_resamples, seed=seed) for n, v in names.items()}
        out[target] = {n: {k: d[k] for k in ("n", "mean", "mean_ci95")} for n, d in stats.items()}
    return out


def _constant_answer(score: Score) -> str | None:
    """The one answer a score gave to every item ("yes" or "no"), or None."""
    answer = score.evidence.get("constant_predictions")
    return answer if isinstance(answer, str) else None


def _shortfalls(results: RunResults) -> dict[str, Any]:
    """How many records fell short of the requested examples, per split, and by how many."""
    short: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for record in results.records:
        short.update(record.shortfall.keys())
        missing.update(record.shortfall)
    return {
        "n": len(results.records),
        "short": dict(sorted(short.items())),
        "missing": dict(sorted(missing.items())),
    }


def _by_status(results: Sequence[Explanation | Score]) -> dict[str, int]:
    """How many results failed (final: kept by a rerun) and errored (retried by a rerun)."""
    return {
        "n_failed": sum(r.status is Status.FAILED for r in results),
        "n_error": sum(r.status is Status.ERROR for r in results),
    }


def write_summary(
    run_dir: str | Path,
    *,
    results: RunResults | None = None,
    n_resamples: int = 2000,
    seed: int | None = None,
) -> Path:
    """Write `run_dir/summary.json` atomically (temp file + os.replace); return its path."""
    run_dir = Path(run_dir)
    if results is None:
        results = RunResults.load(run_dir)
    data = summarize(results, n_resamples=n_resamples, seed=seed)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return atomic_write_text(run_dir / SUMMARY_FILE, text)
