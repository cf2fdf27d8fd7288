"""Reporting: a run's results, summary statistics, the HTML page, the terminal table, exports.

    from saexplain.report import RunResults, write_report
    results = RunResults.load("runs/demo")
    print(format_table(results))
    write_report("runs/demo")               # summary.json, report/index.html, report.html

Not imported by `import saexplain`; pandas is imported only by `RunResults.to_dataframe` and
`to_pandas`/`to_parquet`. The exports and importers of other tools' formats are in
`saexplain.interop`.
"""

from __future__ import annotations

import json
from pathlib import Path

from saexplain.report.exports import (
    ExportGapWarning,
    export_delphi,
    export_neuronpedia,
    item_examples,
    neuronpedia_type_name,
)
from saexplain.report.html import render_html, report_data, write_html
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
    "item_examples",
    "neuronpedia_type_name",
    "read_jsonl",
    "render_html",
    "report_data",
    "summarize",
    "write_html",
    "write_report",
    "write_summary",
]


def write_report(run_dir: str | Path, *, results: RunResults | None = None) -> dict[str, Path]:
    """Write `summary.json`, the report folder `report/` (open `report/index.html`) and
    `report.html`, a page pointing to it, into a run directory (reading it once)."""
    from saexplain.report.html import write_redirect
    from saexplain.report.results import REPORT_FILE
    from saexplain.rundir import REPORT_DIR

    run_dir = Path(run_dir)
    if results is None:
        results = RunResults.load(run_dir)
    summary_path = write_summary(run_dir, results=results)
    summary = json.loads(summary_path.read_text(encoding="utf-8"))  # computed once
    index = write_html(results, run_dir / REPORT_DIR, summary=summary)
    write_redirect(run_dir / REPORT_FILE, f"{REPORT_DIR}/index.html")
    return {"summary": summary_path, "html": index, "redirect": run_dir / REPORT_FILE}
