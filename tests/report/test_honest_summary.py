"""The summary counts what a run paid, once, over every attempt, and says which results failed
(kept) and which errored (retried by a rerun)."""

import json

import pytest

from saexplain.models import Explanation, LatentRef, Score, Status, Usage
from saexplain.report import RunResults, summarize

REF = LatentRef(coder_id="c", hook="h", index=3)
PAID = Usage(prompt_tokens=100, completion_tokens=10, cost_usd=0.02, calls=2)
REPLAYED = Usage(prompt_tokens=100, completion_tokens=10, cached_calls=2)  # the cache: $0


def explanation(status: Status = Status.OK, usage: Usage = PAID) -> Explanation:
    error = None if status is Status.OK else f"{status.value}!"
    text = "the word cat" if status is Status.OK else ""
    return Explanation(
        latent=REF, explainer="maxact", text=text, status=status, error=error, usage=usage
    )


def score(status: Status, usage: Usage, value: float | None = None) -> Score:
    error = None if status is Status.OK else f"{status.value}!"
    return Score(
        latent=REF,
        scorer="detection",
        explainer="maxact",
        status=status,
        error=error,
        value=value,
        usage=usage,
    )


def test_a_resumed_run_reports_what_its_attempts_paid_once():
    # attempt 1 paid for a score that errored; the rerun replayed its answers from the cache ($0)
    # and paid for one more call
    errored = score(Status.ERROR, PAID)
    retried = score(Status.OK, REPLAYED + Usage(cost_usd=0.01, calls=1), value=0.75)
    results = RunResults(explanations=[explanation()], scores=[errored, retried])
    assert results.scores == [retried]  # the report shows the final score...
    summary = summarize(results, n_resamples=10)
    method = summary["methods"]["maxact/detection"]
    assert method["n"] == 1 and method["usage"]["cost_usd"] == pytest.approx(0.03)  # ...paid once
    assert method["usage"]["calls"] == 3 and method["usage"]["cached_calls"] == 2
    total = summary["usage"]["total"]
    assert total["cost_usd"] == pytest.approx(0.05) and total["calls"] == 5
    assert summary["usage"]["scores"]["cost_usd"] == pytest.approx(0.03)


def test_any_number_of_resumes_never_counts_a_payment_twice(tmp_path):
    lines = [score(Status.ERROR, PAID)] + [score(Status.ERROR, REPLAYED) for _ in range(3)]
    lines.append(score(Status.OK, REPLAYED, value=1.0))
    (tmp_path / "scores.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in lines))
    (tmp_path / "explanations.jsonl").write_text(explanation().model_dump_json() + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"seed": 0}))
    total = summarize(RunResults.load(tmp_path), n_resamples=10)["usage"]["total"]
    assert total["cost_usd"] == pytest.approx(0.04) and total["calls"] == 4


def test_the_summary_tells_failed_results_from_errors():
    other = REF.model_copy(update={"index": 4})
    third = REF.model_copy(update={"index": 5})
    exps = [
        explanation(),
        explanation(Status.FAILED).model_copy(update={"latent": other}),
        explanation(Status.ERROR).model_copy(update={"latent": third}),
    ]
    scores = [
        score(Status.OK, PAID, value=0.5),
        score(Status.FAILED, PAID).model_copy(update={"latent": other}),
        score(Status.ERROR, PAID).model_copy(update={"latent": third}),
    ]
    summary = summarize(RunResults(explanations=exps, scores=scores), n_resamples=10)
    explainer = summary["explainers"]["maxact"]
    assert (explainer["n_failed"], explainer["n_error"], explainer["n_errors"]) == (1, 1, 2)
    method = summary["methods"]["maxact/detection"]
    assert (method["n_failed"], method["n_error"]) == (1, 1)
    # the two non-ok scores belong to failed explanations: the explainer's outcome, not the
    # scorer's errors (the same definition `saexplain run`'s max_error_rate check uses)
    assert (method["n_unexplained"], method["n_errors"], method["error_rate"]) == (2, 0, 0.0)
