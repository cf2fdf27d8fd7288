"""The scorers' metrics against independent implementations (scikit-learn, numpy, scipy)."""

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")

from saexplain.metrics import auroc, classification_metrics, pearson, saebench_accuracy  # noqa: E402
from saexplain.models import Prediction  # noqa: E402


def random_predictions(rng, n=300, p_error=0.1):
    truth = rng.random(n) < rng.uniform(0.2, 0.6)
    guess = np.where(rng.random(n) < 0.7, truth, rng.random(n) < 0.5)
    prob = np.clip(truth * 0.3 + rng.random(n) * 0.7, 0, 1)
    error = rng.random(n) < p_error
    preds = [
        Prediction(item=i, truth=bool(t), error="x")
        if e
        else Prediction(item=i, truth=bool(t), predicted=bool(g), probability=float(p))
        for i, (t, g, p, e) in enumerate(zip(truth, guess, prob, error, strict=True))
    ]
    keep = ~error
    return preds, truth[keep], guess[keep], prob[keep]


@pytest.mark.parametrize("seed", range(10))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    preds, y, yhat, prob = random_predictions(rng)
    m = classification_metrics(preds)
    assert m["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, yhat))
    assert m["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, yhat))
    assert m["precision"] == pytest.approx(sklearn_metrics.precision_score(y, yhat))
    assert m["recall"] == pytest.approx(sklearn_metrics.recall_score(y, yhat))
    assert m["f1"] == pytest.approx(sklearn_metrics.f1_score(y, yhat))
    assert m["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, prob))
    assert m["n_errors"] == len(preds) - len(y)


@pytest.mark.parametrize("seed", range(10))
def test_auroc_with_ties_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    y = rng.random(200) < 0.3
    s = rng.integers(0, 4, 200).astype(float)  # heavy ties
    assert auroc(y.tolist(), s.tolist()) == pytest.approx(sklearn_metrics.roc_auc_score(y, s))


@pytest.mark.parametrize("seed", range(10))
def test_pearson_matches_numpy_and_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    x = rng.exponential(size=500) * (rng.random(500) < 0.2)  # sparse, like activations
    y = x * rng.uniform(0, 2) + rng.normal(size=500)
    r = pearson(x.tolist(), y.tolist())
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert r == pytest.approx(scipy_stats.pearsonr(x, y).statistic)


def test_pearson_undefined_cases():
    assert pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) is None
    assert pearson([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        pearson([1.0, 2.0], [1.0])


@pytest.mark.parametrize("seed", range(5))
def test_saebench_accuracy_matches_its_definition(seed):
    rng = np.random.default_rng(300 + seed)
    preds, *_ = random_predictions(rng, n=100)
    maxima = rng.random(100) * (rng.random(100) < 0.5) * 0.05  # some below 1% of the max
    latent_max = 2.0
    active = maxima > 0.01 * latent_max
    answered = [(p, a) for p, a in zip(preds, active, strict=True) if p.predicted is not None]
    expected = sklearn_metrics.accuracy_score(
        [a for _, a in answered], [p.predicted for p, _ in answered]
    )
    assert saebench_accuracy(preds, maxima.tolist(), latent_max) == pytest.approx(expected)
