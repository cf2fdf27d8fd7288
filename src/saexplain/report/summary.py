"""Per-method summary statistics of a run, written to `summary.json`.

For every (explainer, scorer) pair: the number of valid scores `n`, the median and interquartile
range (numpy's default linear-interpolation percentiles), the mean with a seeded percentile
bootstrap 95% interval, the error rate, and the tokens and cost the scorer spent. For every
explainer: how many explanations were not ok, and its tokens and cost.

A score counts as an error when its status is not ok or its value is None or not finite; errors
are excluded from every statistic, never averaged in as a number. Two kinds of score lines are
not the scorer's errors and are counted apart: `n_unexplained`, the scores of a latent whose
explanation failed (that is the explainer's outcome, counted there), and `n_skipped`, the scores
a `skip_generic` run skipped because the explanation was flagged generic. So `error_rate =
n_errors / n_scored` with `n_scored = n_total - n_unexplained - n_skipped`; `score_error_counts`
is that one definition, and `saexplain run`'s `max_error_rate` check uses it too. `n_failed`
and `n_error` split all lines by status: `failed` results (the method ran and produced nothing
usable) are final, `error` results (an outage, a crash, the spend cap) are retried by a rerun. A
partial score (ok, but computed from fewer items because some errored) counts as a value and in
`n_partial`; a resumed run scores it again.

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

Shuffled controls (`shuffled_controls`): each explainer's pseudo explainer `<explainer>~shuffled`
holds the explanation it gave another latent, scored by every scorer; its pairs are summarised
like any other (with `control_of` naming the explainer), and each true pair gets `shuffled`:
`n` (latents with a valid true and a valid shuffled score), `median_true`, `median_shuffled`,
`frac_true_gt_shuffled` (ties are not "greater"), `sign_test_p` (one-sided exact sign test of
true > shuffled, ties dropped; None without untied pairs) and `at_chance`: true when fewer than
`CHANCE_FRACTION` (60%) of the paired latents score their own explanation above the shuffled one,
i.e. the scorer does not separate explanations from chance in this run (None without pairs).
The fraction is the criterion rather than the sign test because demo-sized runs (20 latents) give
the test little power; the p-value is there to read beside it.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saexplain.files import save
from saexplain.models import Explanation, Score, Status, Usage
from saexplain.report.results import SUMMARY_FILE, RunResults, valid_value
from saexplain.rundir import SKIPPED_GENERIC, MethodIds, control_name, control_of

SUMMARY_FORMAT = 1
_CHUNK = 4_000_000  # bootstrap draws per chunk: bounds memory for large runs
# a scorer separates true from shuffled explanations when at least this share of latents score
# their own explanation above the shuffled one
CHANCE_FRACTION = 0.6


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
    counts = score_error_counts(results)
    for explainer, scorer in results.methods:
        scores = [s for s in all_scores if s.explainer == explainer and s.scorer == scorer]
        values = [v for v in (valid_value(s) for s in scores) if v is not None]
        count = counts[explainer, scorer]
        valid = [s for s in scores if valid_value(s) is not None]
        constant = Counter(a for s in valid if (a := _constant_answer(s)) is not None)
        methods[f"{explainer}/{scorer}"] = {
            "explainer": explainer,
            "scorer": scorer,
            "control_of": control_of(explainer),
            "n_total": len(scores),
            "n_scored": count.n_scored,
            "n_unexplained": count.n_unexplained,
            "n_skipped": count.n_skipped,
            "n_errors": count.n_errors,
            **_by_status(scores),
            "error_rate": count.rate,
            # the run-level chance baseline: the same scorer on deranged explanations
            "shuffled": _shuffled(results, explainer, scorer),
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
        "filters": _filters(results),
        "explainers": explainers,
        "methods": methods,
        "usage": {"explanations": exp_usage, "scores": score_usage, "total": total},
        # spend, calls, retries and provider errors over every attempt at the run (the ledger's)
        "provider_calls": results.manifest.get("provider_calls"),
        "bootstrap": {"n_resamples": n_resamples, "confidence": 0.95, "seed": seed},
    }


@dataclass(frozen=True)
class ErrorCount:
    """How one (explainer, scorer) pair's score lines count (`score_error_counts`)."""

    n_total: int = 0
    n_unexplained: int = 0  # the explanation failed: the explainer's outcome
    n_skipped: int = 0  # skipped as a generic explanation
    n_errors: int = 0  # scored, without a valid value

    @property
    def n_scored(self) -> int:
        return self.n_total - self.n_unexplained - self.n_skipped

    @property
    def rate(self) -> float | None:
        return self.n_errors / self.n_scored if self.n_scored else None


def is_skipped(score: Score) -> bool:
    """Whether a score line is one a `skip_generic` run skipped (a generic explanation)."""
    return (score.error or "").startswith(SKIPPED_GENERIC)


def score_error_counts(results: RunResults) -> dict[tuple[str, str], ErrorCount]:
    """Per (explainer, scorer), the one definition of a scorer's errors, used by the summary and
    by `saexplain run`'s `max_error_rate` check: among the scores of explanations that did not
    fail and were not skipped as generic, those without a valid value (`valid_value`)."""
    # an explanation the run holds and that failed; a score without an explanation line (scores
    # read on their own) is the scorer's
    failed = {(e.latent, e.explainer) for e in results.explanations if e.status is not Status.OK}
    tallies: dict[tuple[str, str], Counter[str]] = {}
    for s in results.scores:
        tally = tallies.setdefault((s.explainer, s.scorer), Counter())
        tally["total"] += 1
        if (s.latent, s.explainer) in failed:
            tally["unexplained"] += 1
        elif is_skipped(s):
            tally["skipped"] += 1
        elif valid_value(s) is None:
            tally["errors"] += 1
    return {
        key: ErrorCount(t["total"], t["unexplained"], t["skipped"], t["errors"])
        for key, t in tallies.items()
    }


def sign_test_p(wins: int, losses: int) -> float | None:
    """One-sided exact sign test: P(at least `wins` of `wins + losses` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return None
    return float(sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n)


def _shuffled(results: RunResults, explainer: str, scorer: str) -> dict[str, Any] | None:
    """The pair's score beside its shuffled control, on the latents that have both: None when
    the run has no controls for it (a control itself, or a run without `shuffled_controls`)."""
    if control_of(explainer) is not None:
        return None
    control = control_name(explainer)
    if (control, scorer) not in results.methods:
        return None
    pairs = []
    for res in results:
        true, shuffled = res.scores.get((explainer, scorer)), res.scores.get((control, scorer))
        if true is None or shuffled is None:
            continue
        a, b = valid_value(true), valid_value(shuffled)
        if a is not None and b is not None:
            pairs.append((a, b))
    wins = sum(a > b for a, b in pairs)
    losses = sum(a < b for a, b in pairs)
    frac = wins / len(pairs) if pairs else None
    return {
        "explainer": control,
        "n": len(pairs),
        "median_true": float(np.median([a for a, _ in pairs])) if pairs else None,
        "median_shuffled": float(np.median([b for _, b in pairs])) if pairs else None,
        "frac_true_gt_shuffled": frac,
        "sign_test_p": sign_test_p(wins, losses),
        "at_chance": None if frac is None else frac < CHANCE_FRACTION,
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


def _filters(results: RunResults) -> dict[str, Any] | None:
    """How many latents each filter flagged, and how many were skipped; None when the run
    computed no filters."""
    found = results.latent_filters
    if not found:
        return None
    flags: dict[str, int] = {}
    for f in found.values():
        for flag in f.get("flags", []):
            flags[flag] = flags.get(flag, 0) + 1
    skipped = sum(results.result(ref).status == "filtered" for ref in found)
    return {"n_checked": len(found), "flagged": dict(sorted(flags.items())), "n_skipped": skipped}


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
    return save(run_dir / SUMMARY_FILE, text)
