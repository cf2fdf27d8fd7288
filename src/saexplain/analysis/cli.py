"""What `saexplain compare` and `saexplain search` do and print (the CLI only parses arguments).

Explanations are dataset-derived LLM text: printed on one line each, control characters removed."""

from __future__ import annotations

import json
from pathlib import Path

from saexplain.analysis.search import as_results, search
from saexplain.analysis.similarity import Comparison, compare_runs
from saexplain.errors import ConfigError
from saexplain.methods import one_line


def _cell(text: str | None, width: int = 48) -> str:
    if text is None:
        return "-"
    flat = one_line(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_comparison(comparison: Comparison, *, limit: int = 20) -> str:
    """The comparison table (highest decoder cosine first), its means and the random baseline."""
    lines = [f"{'A':>6} {'B':>6} {'cosine':>7} {'expl.sim':>8}  explanation A | explanation B"]
    for row in comparison.rows[:limit]:
        sim = "-" if row.similarity is None else f"{row.similarity:.3f}"
        lines.append(
            f"{row.latent_a:>6} {row.latent_b:>6} {row.cosine:>7.3f} {sim:>8}  "
            f"{_cell(row.explanation_a)} | {_cell(row.explanation_b)}"
        )
    if len(comparison.rows) > limit:
        lines.append(f"... {len(comparison.rows) - limit} more pairs (--limit, or --json)")
    mean, base = comparison.mean_similarity, comparison.baseline
    lines.append(f"{len(comparison.rows)} pairs matched ({comparison.method})")
    if mean is None:
        lines.append("no explanation similarity: no explained pairs, or no embedder installed")
    else:
        chance = "-" if base is None else f"{base:.3f}"
        lines.append(f"explanation similarity of matched pairs {mean:.3f}; random pairs {chance}")
    return "\n".join(lines)


def run_compare(
    run_a: str,
    run_b: str | None,
    *,
    coders: list[str] | None = None,
    method: str = "auto",
    k: int = 8,
    explainer: str | None = None,
    limit: int = 20,
    as_json: str | None = None,
    as_html: str | None = None,
) -> str:
    """`saexplain compare`: two runs, or `coders` (two ids) within one run; `as_json` and
    `as_html` (a page with the scatter, `saexplain.report.compare`) are files to write."""
    for path in (run_a, run_b):
        if path is not None and not Path(path).is_dir():
            raise ConfigError(f"{path!r} is not a run directory")
    a = as_results(run_a)
    b = a if run_b is None else as_results(run_b)
    coder_a, coder_b = coders if coders else (None, None)
    if run_b is None and not coders:
        raise ConfigError("give two runs, or --coders A B to compare two coders of one run")
    comparison = compare_runs(
        a, b, coder_a=coder_a, coder_b=coder_b, method=method, k=k, explainer=explainer
    )
    if as_json:
        Path(as_json).write_text(json.dumps(comparison.to_json(), indent=1))
    if as_html:
        from saexplain.report.compare import write_compare_html

        names = " vs ".join(coders) if coders else f"{run_a} vs {run_b}"
        write_compare_html(comparison, as_html, title=f"saexplain compare: {names}")
    return format_comparison(comparison, limit=limit)


def run_search(run: str, query: str, *, k: int = 10, explainer: str | None = None) -> str:
    """`saexplain search`: the nearest explanations, one per line."""
    if not Path(run).is_dir():
        raise ConfigError(f"{run!r} is not a run directory")
    hits = search(run, query, k, explainer=explainer)
    if not hits:
        return "no explanations in this run"
    return "\n".join(
        f"{h.similarity:.3f}  {h.latent.coder_id}:{h.latent.index}  {_cell(h.explanation, 90)}"
        for h in hits
    )
