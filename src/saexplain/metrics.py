"""Metrics shared by the scorers: classifier metrics (detection, fuzzing, neighbour detection,
...), SAEBench's autointerp accuracy, and Pearson correlation (simulation).

Predictions with an error are excluded and counted (`n_errors`), never scored as answers.
A metric that is undefined on the given items (no positives, no probabilities) is None.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from saexplain.models import Prediction


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(predictions: Sequence[Prediction]) -> dict[str, float | None]:
    """Balanced accuracy (the headline), accuracy, precision, recall, F1, AUROC (from
    `probability`, where given) and accuracy per group: `accuracy_q<k>` for activating items of
    quantile k, `accuracy_activating` for those without one, `accuracy_negatives`."""
    answered = [p for p in predictions if p.predicted is not None]
    tp = sum(p.truth and p.predicted is True for p in answered)
    tn = sum(not p.truth and p.predicted is False for p in answered)
    fp = sum(not p.truth and p.predicted is True for p in answered)
    fn = sum(p.truth and p.predicted is False for p in answered)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    if recall is not None and specificity is not None:
        balanced: float | None = (recall + specificity) / 2
    else:
        balanced = None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    with_prob = [p for p in predictions if p.probability is not None]
    metrics: dict[str, float | None] = {
        "balanced_accuracy": balanced,
        "accuracy": _ratio(tp + tn, len(answered)),
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "auroc": auroc([p.truth for p in with_prob], [p.probability or 0.0 for p in with_prob])
        if with_prob
        else None,
        "n_items": float(len(predictions)),
        "n_answered": float(len(answered)),
        "n_errors": float(len(predictions) - len(answered)),
    }
    groups: dict[str, list[bool]] = defaultdict(list)
    for p in answered:
        if not p.truth:
            key = "accuracy_negatives"
        elif p.quantile is None:
            key = "accuracy_activating"
        else:
            key = f"accuracy_q{p.quantile}"
        groups[key].append(p.predicted == p.truth)
    for key in sorted(groups, key=lambda k: (not k.startswith("accuracy_q"), len(k), k)):
        metrics[key] = sum(groups[key]) / len(groups[key])
    return metrics


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equal-length sequences; None when either is constant or
    shorter than two (the correlation is undefined there, not zero)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} values but {len(b)} values to correlate with")
    if len(a) < 2:
        return None
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    if den == 0.0 or not np.isfinite(den):
        return None
    return float(np.clip((a @ b) / den, -1.0, 1.0))


def saebench_accuracy(
    predictions: Sequence[Prediction],
    max_activations: Sequence[float],
    latent_max: float,
    *,
    threshold_frac: float = 0.01,
) -> float | None:
    """SAEBench's autointerp score: the fraction of items classified correctly, where an item
    counts as active when any of its tokens exceeds `threshold_frac` x the latent's max (not by
    the sampler's split). `max_activations[i]` is item i's largest activation. Unlike SAEBench,
    which drops a latent whose answer does not parse, errored items are excluded here (and
    counted by `classification_metrics`)."""
    if len(predictions) != len(max_activations):
        raise ValueError(f"{len(predictions)} predictions but {len(max_activations)} maxima")
    cut = threshold_frac * latent_max
    correct = [
        p.predicted == (m > cut)
        for p, m in zip(predictions, max_activations, strict=True)
        if p.predicted is not None
    ]
    return sum(correct) / len(correct) if correct else None
