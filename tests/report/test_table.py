import pytest

from saexplain.models import Explanation, LatentRef, Score, Status
from saexplain.report import RunResults, format_table


@pytest.mark.parametrize("width", [80, 100, 140, 200])
def test_rows_fit_the_width(run_dir, width):
    table = format_table(RunResults.load(run_dir), width=width, summary=False)
    lines = table.splitlines()
    assert all(len(line) <= width for line in lines), max(map(len, lines))
    body = lines[3:]
    assert [line.split()[0] for line in body] == ["1", "2", "3", "4", "5"]


def test_cells(run_dir, run):
    results = RunResults.load(run_dir)
    lines = format_table(results, width=120, summary=False).splitlines()
    assert lines[0].split() == ["maxact", "vocabproj"]
    header = ["latent", "explanation", "detection", "fuzzing", "explanation", "detection"]
    assert lines[1].split() == [*header, "fuzzing"]
    rows = {line.split()[0]: line for line in lines[3:]}
    value = results[1].score("maxact", "detection")
    assert f"{value:.2f}" in rows["1"] and "word 1" in rows["1"]
    assert rows["4"].split()[:5] == [
        "4",
        "word",
        "4",
        f"{results[4].score('maxact', 'detection'):.2f}",
        "err",
    ]
    assert "(error: provider said" in rows["2"]
    assert "(skipped: dead" in rows["5"] and rows["5"].split()[-1] == "-"


def test_truncation_and_newlines():
    ref = LatentRef(coder_id="c", hook="h", index=7)
    long = "first line\nsecond line " + "x" * 200
    results = RunResults(
        explanations=[Explanation(latent=ref, explainer="e", text=long)],
        scores=[Score(latent=ref, scorer="s", explainer="e", value=0.5)],
    )
    table = format_table(results, width=60, summary=False)
    row = table.splitlines()[3]
    assert len(row) <= 60 and "first line second line" in row and "..." in row
    assert row.rstrip().endswith("0.50")


def test_summary_footer_and_limits(run_dir):
    results = RunResults.load(run_dir)
    table = format_table(results, width=100, max_rows=2)
    assert "... 3 more latents" in table
    summary = results.summary()
    m = summary["methods"]["maxact/fuzzing"]
    assert f"maxact/fuzzing: median {m['median']:.3f}" in table
    assert "errors 25%" in table and "cost $" in table


def test_multiple_coders_are_labelled_and_empty_runs():
    refs = [LatentRef(coder_id=c, hook="h", index=1) for c in ("a", "b")]
    results = RunResults(
        explanations=[Explanation(latent=r, explainer="e", text=f"from {r.coder_id}") for r in refs]
    )
    lines = format_table(results, width=80).splitlines()
    assert lines[3].split()[0] == "a:1" and lines[4].split()[0] == "b:1"
    assert "(no latents yet)" in format_table(RunResults(), width=80)


def test_failed_status_text():
    ref = LatentRef(coder_id="c", hook="h", index=0)
    results = RunResults(
        explanations=[
            Explanation(latent=ref, explainer="e", status=Status.FAILED, error="no answer")
        ]
    )
    assert "(failed: no answer)" in format_table(results, width=80)
