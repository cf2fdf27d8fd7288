import json
import os

import numpy as np
import pytest

from saexplain.models import LatentRef, Score, Status, Usage
from saexplain.report import RunResults, bootstrap_mean_ci, summarize, write_summary


def test_figures_match_numpy(run, run_dir):
    summary = summarize(RunResults.load(run_dir))
    assert set(summary["methods"]) == {f"{e}/{s}" for e, s in run.values}
    for (explainer, scorer), values in run.values.items():
        m = summary["methods"][f"{explainer}/{scorer}"]
        x = np.array(values)
        assert m["n"] == len(values)
        assert m["n_total"] == run.totals[(explainer, scorer)]
        assert m["median"] == pytest.approx(np.median(x))
        assert m["q25"] == pytest.approx(np.quantile(x, 0.25))
        assert m["q75"] == pytest.approx(np.quantile(x, 0.75))
        assert m["iqr"] == pytest.approx(np.quantile(x, 0.75) - np.quantile(x, 0.25))
        assert m["mean"] == pytest.approx(x.mean())
        assert m["min"] == x.min() and m["max"] == x.max()
        lo, hi = m["mean_ci95"]
        assert x.min() <= lo <= x.mean() <= hi <= x.max()
        n_err = run.totals[(explainer, scorer)] - len(values)
        assert m["n_errors"] == n_err
        assert m["error_rate"] == pytest.approx(n_err / run.totals[(explainer, scorer)])
    assert summary["methods"]["maxact/fuzzing"]["error_rate"] == pytest.approx(0.25)


def test_usage_and_explainer_errors(run, run_dir):
    summary = summarize(RunResults.load(run_dir))
    for name in ("maxact", "vocabproj"):
        exps = [e for e in run.explanations if e.explainer == name]
        e = summary["explainers"][name]
        assert e["n_total"] == len(exps)
        assert e["n_errors"] == sum(x.status is not Status.OK for x in exps)
        assert e["usage"]["prompt_tokens"] == sum(x.usage.prompt_tokens for x in exps)
        assert e["usage"]["cost_usd"] == pytest.approx(sum(x.usage.cost_usd for x in exps))
    assert summary["explainers"]["vocabproj"]["error_rate"] == pytest.approx(0.25)
    total = summary["usage"]["total"]
    everything = [x.usage for x in run.explanations] + [s.usage for s in run.scores]
    assert total["prompt_tokens"] == sum(u.prompt_tokens for u in everything)
    assert total["completion_tokens"] == sum(u.completion_tokens for u in everything)
    assert total["calls"] == sum(u.calls for u in everything)
    assert total["cost_usd"] == pytest.approx(sum(u.cost_usd for u in everything))
    m = summary["methods"]["maxact/detection"]
    scores = [s for s in run.scores if (s.explainer, s.scorer) == ("maxact", "detection")]
    assert m["usage"]["prompt_tokens"] == sum(s.usage.prompt_tokens for s in scores)
    assert m["prediction_errors"] == sum(s.n_errors for s in scores)
    assert summary["latents"] == {"n": 5, "by_status": {"ok": 4, "skipped": 1}}
    assert summary["bootstrap"]["seed"] == 7 and summary["run"]["seed"] == 7


def test_bootstrap_is_seeded_and_sound():
    rng = np.random.default_rng(1)
    x = rng.normal(0.7, 0.1, size=400)
    a = bootstrap_mean_ci(x.tolist(), seed=3)
    assert a == bootstrap_mean_ci(x.tolist(), seed=3)
    assert a != bootstrap_mean_ci(x.tolist(), seed=4)
    # for a large sample the percentile bootstrap matches the normal-theory interval
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert a[0] == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert a[1] == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    # chunking (many resamples of a long vector) does not change the answer's distribution
    big = bootstrap_mean_ci(x.tolist(), n_resamples=20_000, seed=3)
    assert big[0] == pytest.approx(a[0], abs=0.15 * se)
    assert bootstrap_mean_ci([], seed=0) is None
    assert bootstrap_mean_ci([0.5], seed=0) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0], n_resamples=0)


def test_all_errors_and_empty_runs():
    ref = LatentRef(coder_id="c", hook="h", index=0)
    results = RunResults(
        scores=[
            Score(latent=ref, scorer="s", explainer="e", status=Status.ERROR, error="down"),
            Score(
                latent=ref.model_copy(update={"index": 1}),
                scorer="s",
                explainer="e",
                value=None,
                usage=Usage(prompt_tokens=3),
            ),
        ]
    )
    m = summarize(results)["methods"]["e/s"]
    assert m["n"] == 0 and m["n_total"] == 2 and m["error_rate"] == 1.0
    assert m["median"] is None and m["mean_ci95"] is None and m["usage"]["prompt_tokens"] == 3
    empty = summarize(RunResults())
    assert empty["methods"] == {} and empty["latents"]["n"] == 0


def test_write_summary_is_atomic_json(run_dir):
    path = write_summary(run_dir)
    assert path == run_dir / "summary.json"
    data = json.loads(path.read_text())
    assert data == summarize(RunResults.load(run_dir))  # deterministic (seeded)
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
    # rewriting replaces the file
    write_summary(run_dir, seed=11)
    assert json.loads(path.read_text())["bootstrap"]["seed"] == 11
