"""The intervention scorer's `by_target` (the score beside its baselines, per target KL) in the
terminal table's summary lines and in the HTML report, escaped like the rest of the page."""

from __future__ import annotations

import re

from saexplain.models import Explanation, LatentRef, Score
from saexplain.report import RunResults, format_table
from saexplain.report.html import by_target_html, render_html
from saexplain.report.summary import summarize

XSS = "<script>alert(1)</script>"


def scores(explainer: str = "maxact") -> list[Score]:
    """Two latents scored at two targets; the second latent missed the 0.5 target."""
    out = []
    for index, (score, random_coder, reached) in enumerate([(2.0, -0.2, 1.0), (1.0, 0.0, 0.0)]):
        metrics: dict[str, float | None] = {}
        for target in ("kl=0.25", "kl=0.5"):
            metrics |= {
                f"{target}/score": score,
                f"{target}/random_latents": 0.5,
                f"{target}/random_coder": random_coder,
                f"{target}/decoys": 0.0,
                f"{target}/kl": 0.25 if target == "kl=0.25" else 0.45,
                f"{target}/value": 3.0,
                f"{target}/reached": 1.0 if target == "kl=0.25" else reached,
            }
        ref = LatentRef(coder_id="c", hook="h", index=index)
        out.append(
            Score(
                latent=ref, scorer="intervention", explainer=explainer, value=score, metrics=metrics
            )
        )
    return out


def results(explainer: str = "maxact") -> RunResults:
    made = scores(explainer)
    exps = [Explanation(latent=s.latent, explainer=explainer, text="cats") for s in made]
    return RunResults(explanations=exps, scores=made)


def test_the_table_shows_each_target_beside_its_baselines():
    run = results()
    by_target = summarize(run)["methods"]["maxact/intervention"]["by_target"]
    lines = format_table(run, width=120).splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("maxact/intervention:")]
    assert len(at) == 1
    first, second = lines[at[0] + 1], lines[at[0] + 2]
    lo, hi = by_target["kl=0.5"]["score"]["mean_ci95"]
    assert second == (
        f"  kl=0.5: score 1.500 [{lo:.3f}, {hi:.3f}] n=2, random_latents 0.500, "
        "random_coder -0.100, decoys 0.000, KL 0.450, reached 50%"
    )
    assert first.startswith("  kl=0.25: score 1.500 [") and first.endswith("reached 100%")
    assert not lines[at[0] + 3].startswith("  kl=")  # then the tokens line


def test_methods_without_targets_get_no_target_lines():
    ref = LatentRef(coder_id="c", hook="h", index=1)
    run = RunResults(scores=[Score(latent=ref, scorer="detection", explainer="e", value=0.7)])
    assert "kl=" not in format_table(run, width=100)
    assert by_target_html(summarize(run)) == ""


def test_the_html_report_has_a_per_target_table():
    run = results()
    summary = summarize(run)
    table = by_target_html(summary)
    head = re.findall(r"<th>([^<]*)</th>", table)
    baselines = ["random_latents", "random_coder", "decoys"]
    assert head == ["explainer", "scorer", "target", "score", *baselines, "kl", "value", "reached"]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == 2
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", rows[1])
    lo, hi = summary["methods"]["maxact/intervention"]["by_target"]["kl=0.5"]["score"]["mean_ci95"]
    assert cells[:4] == ["maxact", "intervention", "kl=0.5", f"1.500 [{lo:.3f}, {hi:.3f}]"]
    assert cells[5].startswith("-0.100") and cells[-1] == "50%"
    page = render_html(run, summary=summary)
    assert table in page and page.index("Scores per method") < page.index(table)


def test_names_in_the_per_target_table_are_escaped():
    run = results(explainer=XSS)
    hostile = scores(XSS)[0].model_copy()
    hostile = hostile.model_copy(update={"metrics": {**hostile.metrics, f"kl=1/{XSS}": 1.0}})
    run = RunResults(explanations=run.explanations, scores=[hostile, *run.scores[1:]])
    page = render_html(run)
    assert XSS not in page
    table = by_target_html(summarize(run))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table and "<script>" not in table
