import itertools

import numpy as np
import pytest

from saexplain.metrics import auroc, classification_metrics
from saexplain.models import Prediction


def preds(pairs, quantiles=None):
    return [
        Prediction(item=i, truth=t, predicted=p, quantile=(quantiles or {}).get(i))
        for i, (t, p) in enumerate(pairs)
    ]


def brute_force_auroc(labels, scores):
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_perfect_answers():
    m = classification_metrics(preds([(True, True)] * 5 + [(False, False)] * 5))
    assert m["balanced_accuracy"] == m["accuracy"] == m["f1"] == 1.0


def test_answering_no_to_everything_is_chance_in_balanced_accuracy():
    # 5 activating, 12 not: plain accuracy looks good, balanced accuracy says chance.
    m = classification_metrics(preds([(True, False)] * 5 + [(False, False)] * 12))
    assert m["accuracy"] == pytest.approx(12 / 17)
    assert m["balanced_accuracy"] == 0.5
    assert m["precision"] is None and m["f1"] is None


def test_errors_are_excluded_and_counted():
    items = [
        *preds([(True, True), (False, False)]),
        Prediction(item=2, truth=True, error="timeout"),
        Prediction(item=3, truth=False, error="429"),
    ]
    m = classification_metrics(items)
    assert m["balanced_accuracy"] == 1.0
    assert (m["n_items"], m["n_answered"], m["n_errors"]) == (4, 2, 2)


def test_accuracy_per_decile():
    items = preds(
        [(True, True), (True, False), (True, True), (False, True)], quantiles={0: 9, 1: 0, 2: 0}
    )
    m = classification_metrics(items)
    assert m["accuracy_q9"] == 1.0 and m["accuracy_q0"] == 0.5 and m["accuracy_negatives"] == 0.0


def test_random_answers_score_near_chance():
    rng = np.random.default_rng(0)
    truth = rng.random(4000) < 0.3
    guesses = rng.random(4000) < 0.5
    m = classification_metrics(preds(zip(truth.tolist(), guesses.tolist(), strict=True)))
    assert m["balanced_accuracy"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(60) < 0.4).tolist()
    scores = rng.integers(0, 5, 60).astype(float).tolist()  # many ties
    assert auroc(labels, scores) == pytest.approx(brute_force_auroc(labels, scores))


def test_auroc_edge_cases():
    assert auroc([True, True], [0.1, 0.2]) is None
    assert auroc([True, False], [0.9, 0.1]) == 1.0
    assert auroc([True, False], [0.1, 0.9]) == 0.0
    with pytest.raises(ValueError):
        auroc([True], [0.1, 0.2])


def test_auroc_from_probabilities_in_metrics():
    items = [
        Prediction(item=0, truth=True, predicted=True, probability=0.9),
        Prediction(item=1, truth=False, predicted=False, probability=0.2),
        Prediction(item=2, truth=False, error="x"),
    ]
    assert classification_metrics(items)["auroc"] == 1.0
    assert classification_metrics(preds([(True, True), (False, False)]))["auroc"] is None
