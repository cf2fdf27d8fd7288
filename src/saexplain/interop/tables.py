"""pandas and parquet: a run's explanations and scores as one tidy table.

`to_pandas(results)` (also `RunResults.to_pandas()`) gives one tidy frame: one row per
(latent, explainer, scorer) score, and one row with `scorer` missing for an explanation that has
no score, so every explanation appears. Columns: `coder`, `hook`, `latent`, `explainer`,
`explanation` (null unless ok), `explanation_status`, `explanation_llm`, `scorer`, `score` (the
headline value, null unless ok and finite), `score_status`, `error` (the score's, else the
explanation's), `control_of` (on a shuffled control's rows, `<explainer>~shuffled`, the explainer
it is the chance baseline of; null on real explanations: filter on it before treating rows as
explanations), and one `metric.<name>` column per metric a score recorded.
`to_parquet(results, out_dir)` writes that frame to `<out_dir>/results.parquet`.

pandas and pyarrow are optional: `pip install "saexplain[pandas]"`; they are imported on use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.interop._common import valid_value
from saexplain.models import Status
from saexplain.rundir import control_of

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

__all__ = ["COLUMNS", "PARQUET_FILE", "tidy_rows", "to_pandas", "to_parquet"]

COLUMNS = (
    "coder",
    "hook",
    "latent",
    "explainer",
    "explanation",
    "explanation_status",
    "explanation_llm",
    "scorer",
    "score",
    "score_status",
    "error",
    "control_of",
)
PARQUET_FILE = "results.parquet"


def _optional(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)  # optional dependency, imported on use
    except ImportError as exc:
        raise ImportError(
            f'{what} needs {module}; install it with `pip install "saexplain[pandas]"`'
        ) from exc


def tidy_rows(results: RunResults) -> list[dict[str, Any]]:
    """The tidy table as dicts (no pandas needed): see the module docstring."""
    rows = []
    for res in results:
        base = {"coder": res.latent.coder_id, "hook": res.latent.hook, "latent": res.latent.index}
        explainers = list(dict.fromkeys([*res.explanations, *(e for e, _ in res.scores)]))
        for name in explainers:
            exp = res.explanations.get(name)
            head = base | {
                "explainer": name,
                "explanation": res.explanation(name),
                "explanation_status": None if exp is None else exp.status.value,
                "explanation_llm": None if exp is None else exp.llm,
                "control_of": control_of(name),
            }
            scored = [(s, score) for (e, s), score in res.scores.items() if e == name]
            if not scored:
                error = None if exp is None or exp.status is Status.OK else exp.error
                rows.append(
                    head | {"scorer": None, "score": None, "score_status": None, "error": error}
                )
            for scorer, score in scored:
                row = head | {
                    "scorer": scorer,
                    "score": valid_value(score),
                    "score_status": score.status.value,
                    "error": score.error or (None if exp is None else exp.error),
                }
                row |= {f"metric.{k}": v for k, v in score.metrics.items()}
                rows.append(row)
    return rows


def to_pandas(results: RunResults) -> Any:
    """The run's explanations and scores as one tidy pandas DataFrame (module docstring)."""
    pd = _optional("pandas", "RunResults.to_pandas")
    rows = tidy_rows(results)
    metrics = sorted({k for row in rows for k in row if k.startswith("metric.")})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *metrics])
    frame["latent"] = frame["latent"].astype("int64")
    return frame


def to_parquet(results: RunResults, out_dir: str | Path) -> Path:
    """Write the tidy frame to `<out_dir>/results.parquet`; return its path."""
    frame = to_pandas(results)
    _optional("pyarrow", "RunResults.to_parquet")
    target = Path(out_dir) / PARQUET_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    frame.to_parquet(tmp, engine="pyarrow", index=False)
    tmp.replace(target)  # atomic: a reader never sees half a file
    return target
