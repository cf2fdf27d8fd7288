"""`saexplain compare --html`: the scatter page, escaped, its plotly local, no inline script."""

from __future__ import annotations

import pytest

from saexplain.report.compare import compare_figure, write_compare_html
from saexplain.report.html import read_report_data

from .conftest import XSS
from .test_html import check

pytest.importorskip("plotly")


def comparison():
    from saexplain.analysis.similarity import Comparison, PairRow

    rows = (
        PairRow(0, 3, 0.9, f"cats {XSS}", "<br>cats", 0.8),
        PairRow(1, 2, 0.7, "dogs", "dogs", 0.6),
        PairRow(2, 0, 0.4, "code", None, None),  # B unexplained: no similarity, not plotted
    )
    return Comparison(rows=rows, method="exact", baseline=0.25)


def test_compare_page_holds_the_scatter_escaped(tmp_path):
    index = write_compare_html(comparison(), tmp_path / "out" / "cmp.html")
    folder = index.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "cmp.html",
        "compare.js",
        "plotly.min.js",
        "report.css",
    ]
    page = index.read_text()
    # the report's checks: balanced tags, only the folder's scripts, the JSON block, the CSP;
    # the page's own script is compare.js
    parser = check(page.replace('src="compare.js"', 'src="report.js"'))
    text = "".join(parser.text)
    assert XSS in text and XSS not in page  # the table shows it as text
    assert "3 pairs matched (exact)" in text and "random pairs 0.250" in text
    fig = read_report_data(index)
    trace = fig["data"][0]
    assert trace["type"] == "scatter" and trace["x"] == [0.9, 0.7] and trace["y"] == [0.8, 0.6]
    # hover text: the data escaped, only our own line breaks are markup
    assert "&lt;script&gt;" in trace["hovertext"][0] and "<script" not in trace["hovertext"][0]
    assert "B: &lt;br&gt;cats" in trace["hovertext"][0]
    assert fig["layout"]["shapes"][0]["y0"] == 0.25  # the random-pair baseline


def test_compare_figure_without_similarities_has_no_points():
    from saexplain.analysis.similarity import Comparison, PairRow

    fig = compare_figure(
        Comparison(rows=(PairRow(0, 0, 1.0, None, None, None),), method="exact", baseline=None)
    )
    assert fig["data"][0]["x"] == [] and "shapes" not in fig["layout"]


def test_compare_cli_writes_the_page(tmp_path, monkeypatch, capsys):
    from saexplain.analysis import cli as analysis_cli
    from saexplain.cli import main

    monkeypatch.setattr(analysis_cli, "as_results", lambda path: object())
    monkeypatch.setattr(analysis_cli, "compare_runs", lambda *a, **k: comparison())
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "cmp.html"
    assert main(["compare", str(run), "--coders", "a", "b", "--html", str(out)]) == 0
    assert "3 pairs matched" in capsys.readouterr().out
    assert "saexplain compare: a vs b" in out.read_text()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
