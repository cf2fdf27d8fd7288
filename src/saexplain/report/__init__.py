"""Reporting: a run's results, summary statistics, the HTML page, the terminal table, exports.

    from saexplain.report import RunResults, write_report
    results = RunResults.load("runs/demo")
    print(format_table(results))
    write_report("runs/demo")               # summary.json and report.html

Not imported by `import saexplain`; pandas is imported only by `RunResults.to_dataframe`.
"""

from __future__ import annotations

from pathlib import Path

from saexplain.report.exports import (
    ExportGapWarning,
    export_delphi,
    export_neuronpedia,
    item_examples,
    neuronpedia_type_name,
)
from saexplain.report.html import histogram_svg, render_html, write_html
from saexplain.report.results import (
    LatentEntry,
    LatentResult,
    RunFormatError,
    RunResults,
    TruncatedLineWarning,
    read_jsonl,
)
from saexplain.report.summary import bootstrap_mean_ci, summarize, write_summary
from saexplain.report.table import format_table

__all__ = [
    "ExportGapWarning",
    "LatentEntry",
    "LatentResult",
    "RunFormatError",
    "RunResults",
    "TruncatedLineWarning",
    "bootstrap_mean_ci",
    "export_delphi",
    "export_neuronpedia",
    "format_table",
    "histogram_svg",
    "item_examples",
    "neuronpedia_type_name",
    "read_jsonl",
    "render_html",
    "summarize",
    "write_html",
    "write_report",
    "write_summary",
]


def write_report(run_dir: str | Path, *, results: RunResults | None = None) -> dict[str, Path]:
    """Write `summary.json` and `report.html` into a run directory (reading it once)."""
    from saexplain.report.results import REPORT_FILE

    run_dir = Path(run_dir)
    if results is None:
        results = RunResults.load(run_dir)
    return {
        "summary": write_summary(run_dir, results=results),
        "html": write_html(results, run_dir / REPORT_FILE),
    }
