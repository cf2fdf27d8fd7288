"""Each score beside its shuffled control; a scorer at chance is marked; one error definition."""

from __future__ import annotations

from saexplain.cli import _check_error_rate
from saexplain.models import Explanation, LatentRef, Score, Status
from saexplain.report import RunResults, format_table, summarize
from saexplain.report.summary import score_error_counts, sign_test_p
from saexplain.rundir import SKIPPED_GENERIC

REFS = [LatentRef(coder_id="c", hook="h", index=i) for i in range(10)]


def _results(coin_name: str = "coin") -> RunResults:
    """`sep` gives every latent's own explanation 0.9 and the shuffled one 0.4; `coin` scores
    both alike (true above shuffled on 4 of 10 latents)."""
    exps, scores = [], []
    for i, ref in enumerate(REFS):
        exps.append(Explanation(latent=ref, explainer="e", text=f"thing {i}"))
        exps.append(Explanation(latent=ref, explainer="e~shuffled", text=f"thing {(i + 1) % 10}"))
        for explainer, sep, coin in (("e", 0.9, 0.5 + 0.01 * (i < 4)), ("e~shuffled", 0.4, 0.5)):
            scores.append(Score(latent=ref, explainer=explainer, scorer="sep", value=sep))
            scores.append(Score(latent=ref, explainer=explainer, scorer=coin_name, value=coin))
    return RunResults(explanations=exps, scores=scores)


def test_summary_puts_the_shuffled_control_beside_each_score():
    methods = summarize(_results(), n_resamples=10)["methods"]
    sep, coin = methods["e/sep"]["shuffled"], methods["e/coin"]["shuffled"]
    assert sep["explainer"] == "e~shuffled" and sep["n"] == 10
    assert (sep["median_true"], sep["median_shuffled"]) == (0.9, 0.4)
    assert sep["frac_true_gt_shuffled"] == 1.0 and sep["at_chance"] is False
    assert sep["sign_test_p"] == 2**-10
    assert coin["frac_true_gt_shuffled"] == 0.4 and coin["at_chance"] is True
    # ties are dropped: 4 wins of 4 untied pairs; the fraction (0.4) decides, not the p-value
    assert coin["sign_test_p"] == 1 / 16
    assert methods["e~shuffled/sep"]["control_of"] == "e"
    assert methods["e~shuffled/sep"]["shuffled"] is None


def test_sign_test():
    assert sign_test_p(0, 0) is None
    assert sign_test_p(5, 0) == 1 / 32 and sign_test_p(0, 5) == 1.0
    assert abs(sign_test_p(14, 6) - 0.0577) < 1e-3


def test_a_scorer_at_chance_is_marked_and_a_separating_one_is_not():
    table = format_table(_results(), width=160)
    lines = table.splitlines()
    header = lines[1]
    assert "coin ≈chance" in header and "sep ≈chance" not in header and "sep" in header
    assert "e~shuffled" not in lines[0]  # beside the scores, not a column group of its own
    assert "0.90 (0.40)" in lines[3]
    assert any(line.startswith("≈chance: fewer than 60% of latents") for line in lines)
    coin = next(line for line in lines if line.startswith("e/coin:"))
    sep = next(line for line in lines if line.startswith("e/sep:"))
    assert "true > shuffled on 4 of 10 latents (40%) ≈chance" in coin
    assert "shuffled median 0.400, true > shuffled on 10 of 10 latents (100%)," in sep
    assert "≈chance" not in sep
    assert not any(line.startswith("e~shuffled/") for line in lines)


def test_a_long_scorer_name_is_cut_but_never_its_chance_mark():
    header = format_table(_results("a_scorer_with_a_very_long_name"), width=80).splitlines()[1]
    assert header.count("≈chance") == 1 and "a_scorer_with..." in header


def test_without_controls_nothing_is_marked():
    results = RunResults(
        explanations=[Explanation(latent=r, explainer="e", text="x") for r in REFS],
        scores=[Score(latent=r, explainer="e", scorer="s", value=0.5) for r in REFS],
    )
    assert summarize(results, n_resamples=10)["methods"]["e/s"]["shuffled"] is None
    assert "≈chance" not in format_table(results, width=120) and "(0." not in format_table(results)


def _errors_run(limit: float, path: object = None) -> RunResults:
    """Latents 0-3: explained; 4-5: the explanation failed (their scores say so); 6: skipped as
    generic. Of the 4 scored, 1 errored and 1 failed."""
    exps = [
        Explanation(latent=r, explainer="e", text="x")
        if i < 4 or i == 6
        else Explanation(latent=r, explainer="e", status=Status.FAILED, error="no answer")
        for i, r in enumerate(REFS[:7])
    ]
    scores = [
        Score(latent=REFS[0], explainer="e", scorer="s", value=0.8),
        Score(latent=REFS[1], explainer="e", scorer="s", value=0.7),
        Score(latent=REFS[2], explainer="e", scorer="s", status=Status.ERROR, error="down"),
        Score(latent=REFS[3], explainer="e", scorer="s", status=Status.FAILED, error="no parse"),
        *(
            Score(latent=REFS[i], explainer="e", scorer="s", status=Status.ERROR, error="n/a")
            for i in (4, 5)
        ),
        Score(
            latent=REFS[6],
            explainer="e",
            scorer="s",
            status=Status.FAILED,
            error=f"{SKIPPED_GENERIC} (near-duplicate)",
        ),
    ]
    config = {"max_error_rate": limit}
    return RunResults(explanations=exps, scores=scores, config=config, run_dir=path)


def test_summary_and_max_error_rate_share_one_error_definition(capsys, tmp_path):
    results = _errors_run(0.5)
    count = score_error_counts(results)["e", "s"]
    assert (count.n_total, count.n_unexplained, count.n_skipped, count.n_errors) == (7, 2, 1, 2)
    m = summarize(results, n_resamples=10)["methods"]["e/s"]
    assert (m["n_scored"], m["n_errors"], m["error_rate"]) == (4, 2, 0.5)
    assert "errors 50%" in format_table(results, width=120)
    # the CLI fails exactly when the summary's error_rate is over the limit
    assert _check_error_rate(_errors_run(0.5, tmp_path)) == 0
    assert _check_error_rate(_errors_run(0.49, tmp_path)) != 0
    assert "e/s: 2 of 4 scores are errors (50%)" in capsys.readouterr().err
