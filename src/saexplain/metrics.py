"""Classifier metrics shared by the scorers (detection, fuzzing, neighbour detection, ...).

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
