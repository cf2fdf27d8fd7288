"""One static, self-contained HTML page per run: inline CSS and SVG, no scripts, no assets.

Every string that comes from a dataset, a model, an LLM or a config goes through `html.escape`
(`_e`), so a dataset containing `<script>` shows it as text. Activating tokens are found with
`saexplain.render.marked` (the same rule the prompts use) and wrapped in `<mark>` with the
activation in the `title` attribute; the highlight's opacity follows the activation.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from saexplain.models import Example, LatentStats, Status
from saexplain.render import clean_tokens, marked
from saexplain.report._io import atomic_write_text
from saexplain.report.results import LatentResult, RunResults, valid_value


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return _e(value)
    return f"{value:.{digits}f}"


def _css() -> str:
    return resources.files("saexplain.report").joinpath("report.css").read_text(encoding="utf-8")


# --- plots ----------------------------------------------------------------------------------------


def _range(values: np.ndarray[Any, Any]) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1:  # accuracies, AUROC, fractions: show the whole scale
        return 0.0, 1.0
    if lo >= -1 and hi <= 1:  # correlations
        return -1.0, 1.0
    if lo == hi:
        return lo - 0.5, hi + 0.5
    return lo, hi


def histogram_svg(
    values: Sequence[float], *, title: str, bins: int = 20, width: int = 320, height: int = 160
) -> str:
    """An inline SVG histogram of `values` with the median as a dashed line."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    left, right, top, bottom = 34, 10, 18, 24
    pw, ph = width - left - right, height - top - bottom
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
        f'<text x="{left}" y="12">{_e(title)}</text>'
    )
    if x.size == 0:
        return f'{head}<text x="{left}" y="{top + ph // 2}">no valid scores</text></svg>'
    lo, hi = _range(x)
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1)
    bar_w = pw / bins
    parts = [head]
    for i, c in enumerate(counts):
        if c == 0:
            continue
        h = ph * int(c) / peak
        parts.append(
            f'<rect class="bar" data-count="{int(c)}" x="{left + i * bar_w:.2f}" '
            f'y="{top + ph - h:.2f}" width="{max(bar_w - 1, 0.5):.2f}" height="{h:.2f}">'
            f"<title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {int(c)}</title></rect>"
        )
    med = float(np.median(x))
    mx = left + pw * (med - lo) / (hi - lo)
    parts += [
        f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}"/>',
        f'<line class="median" x1="{mx:.2f}" y1="{top}" x2="{mx:.2f}" y2="{top + ph}">'
        f"<title>median {med:.3f}</title></line>",
        f'<text x="{left}" y="{height - 8}" text-anchor="middle">{lo:.3g}</text>',
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        f"{(lo + hi) / 2:.3g}</text>",
        f'<text x="{left + pw}" y="{height - 8}" text-anchor="middle">{hi:.3g}</text>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>',
        "</svg>",
    ]
    return "".join(parts)


# --- pieces ---------------------------------------------------------------------------------------


def example_html(
    example: Example, *, latent_max: float | None = None, threshold: float = 0.3
) -> str:
    """One example as escaped text, marked tokens in `<mark title="activation ...">`."""
    acts = example.activations
    ref = latent_max if latent_max is not None and latent_max > 0 else max(acts, default=0.0)
    if latent_max is not None and latent_max > 0:
        marks = marked(acts, threshold=threshold, relative_to="latent", latent_max=latent_max)
    else:
        marks = marked(acts, threshold=threshold)
    out = []
    for token, act, is_marked in zip(clean_tokens(example.str_tokens), acts, marks, strict=True):
        core = token.strip()
        if is_marked and core:
            alpha = min(1.0, max(0.15, act / ref)) if ref > 0 else 0.5
            lead = token[: len(token) - len(token.lstrip())]  # whitespace stays outside the mark
            trail = token[len(token.rstrip()) :]
            out.append(
                f'{_e(lead)}<mark style="--a:{alpha:.2f}" title="activation {act:.4g}">'
                f"{_e(core)}</mark>{_e(trail)}"
            )
        else:
            out.append(_e(token))
    return (
        f'<li class="ex"><span class="max">max {example.max_activation:.3g}</span>'
        f"{''.join(out)}</li>"
    )


def _stats_html(stats: LatentStats | None) -> str:
    if stats is None:
        return '<p class="muted">No activation statistics.</p>'
    cells = [
        ("tokens seen", str(stats.n_tokens)),
        ("firings", str(stats.count)),
        ("frequency", f"{stats.frequency:.3g}"),
        ("max", _num(stats.max)),
        ("mean (firing)", _num(stats.mean)),
    ]
    if stats.quantiles:
        cells.append(("bin edges", ", ".join(f"{q:.3g}" for q in stats.quantiles)))
    head = "".join(f"<th>{_e(k)}</th>" for k, _ in cells)
    row = "".join(f'<td class="num">{_e(v)}</td>' for _, v in cells)
    return f"<table><tr>{head}</tr><tr>{row}</tr></table>"


def _json_details(label: str, value: Any) -> str:
    if not value:
        return ""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return f"<details><summary>{_e(label)}</summary><pre>{_e(text)}</pre></details>"


def _brief(value: Any) -> str:
    """A manifest value in one line: a coder dict by its id, other containers as JSON."""
    if isinstance(value, dict):
        if isinstance(value.get("id"), str):
            return str(value["id"])
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _plugins_text(plugins: Any) -> str | None:
    if not isinstance(plugins, list) or not plugins:
        return None
    parts = []
    for p in plugins:
        if isinstance(p, dict):
            origin = " ".join(str(p[k]) for k in ("distribution", "version") if p.get(k))
            state = f" [{p['state']}]" if p.get("state") not in (None, "loaded") else ""
            parts.append(f"{p.get('name')} ({origin or 'local'}){state}")
        else:
            parts.append(str(p))
    return "; ".join(parts)


def _status_html(status: str | None, error: str | None = None) -> str:
    if status is None:
        return '<span class="muted">-</span>'
    cls = "status-ok" if status == Status.OK.value else "err"
    detail = f": {_e(error)}" if error else ""
    return f'<span class="{cls}">{_e(status)}</span>{detail}'


def _metrics_text(metrics: dict[str, float | None]) -> str:
    shown = [f"{k}={v:.3g}" for k, v in metrics.items() if v is not None and math.isfinite(v)]
    return ", ".join(shown)


def latent_html(
    res: LatentResult,
    *,
    explainers: Sequence[str],
    position: int = 0,
    max_examples: int = 10,
    threshold: float = 0.3,
) -> str:
    """One latent's section: status, statistics, explanations, scores and examples."""
    ref = res.latent
    anchor = f"latent-{position}"  # ids from a counter: coder ids may hold any character
    parts = [
        f'<section class="latent" id="{anchor}">',
        f'<h2>Latent {ref.index} <span class="muted">{_e(ref.coder_id)} · {_e(ref.hook)}'
        "</span></h2>",
        f"<p>Status: {_status_html(res.status, res.reason)}"
        + "".join(f' <span class="muted">· {_e(k)}: {_e(v)}</span>' for k, v in res.info.items())
        + "</p>",
        _stats_html(res.stats),
    ]
    names = [n for n in explainers if n in res.explanations]
    names += [n for n in res.explanations if n not in names]
    if names:
        parts.append("<h3>Explanations</h3>")
    for name in names:
        exp = res.explanations[name]
        usage = exp.usage
        text = (
            f'<p class="explanation">{_e(exp.text)}</p>'
            if exp.status is Status.OK
            else f"<p>{_status_html(exp.status.value, exp.error)}</p>"
        )
        parts.append(
            f"<div><strong>{_e(name)}</strong> "
            f'<span class="muted">({usage.total_tokens} tokens, ${usage.cost_usd:.4f})</span>'
            f"{text}{_json_details('settings', exp.settings)}"
            f"{_json_details('evidence', exp.evidence)}</div>"
        )
    if res.scores:
        parts.append(
            "<h3>Scores</h3><table><tr><th>explainer</th><th>scorer</th><th>value</th>"
            "<th>status</th><th>metrics</th><th>answers (errors)</th></tr>"
        )
        for (explainer, scorer), s in res.scores.items():
            n_pred = len(s.predictions)
            constant = s.evidence.get("constant_predictions")
            flag = (
                f' <span class="err" title="the scorer gave one answer to every item">'
                f"constant: {_e(constant)}</span>"
                if isinstance(constant, str)
                else ""
            )
            parts.append(
                f"<tr><td>{_e(explainer)}</td><td>{_e(scorer)}</td>"
                f'<td class="num">{_num(valid_value(s))}{flag}</td>'
                f"<td>{_status_html(s.status.value, s.error)}</td>"
                f"<td>{_e(_metrics_text(s.metrics))}</td>"
                f'<td class="num">{n_pred} ({s.n_errors})</td></tr>'
            )
        parts.append("</table>")
    if res.record is not None:
        latent_max = res.stats.max if res.stats is not None else None
        groups = [
            ("Explanation examples", res.record.explanation_examples, True),
            ("Held-out scoring examples", res.record.scoring_examples, True),
            ("Non-activating examples", res.record.non_activating, False),
        ]
        for label, examples, by_max in groups:
            if not examples:
                continue
            chosen = sorted(examples, key=lambda ex: -ex.max_activation) if by_max else examples
            chosen = list(chosen)[: max_examples if by_max else max(1, max_examples // 3)]
            items = "".join(
                example_html(ex, latent_max=latent_max, threshold=threshold) for ex in chosen
            )
            parts.append(
                f'<h3>{_e(label)} <span class="muted">({len(chosen)} of {len(examples)})'
                f'</span></h3><ul class="examples">{items}</ul>'
            )
    parts.append("</section>")
    return "".join(parts)


def summary_table_html(summary: dict[str, Any]) -> str:
    """The per-method table of a summary dict (see `summarize`)."""
    methods = summary.get("methods", {})
    if not methods:
        return '<p class="muted">No scores yet.</p>'
    head = (
        "<table><tr><th>explainer</th><th>scorer</th><th>n</th><th>median</th>"
        "<th>IQR</th><th>mean [95% CI]</th><th>AUROC median</th>"
        '<th title="scores whose scorer gave one answer to every item">constant answers</th>'
        "<th>error rate</th><th>tokens</th><th>cost (USD)</th></tr>"
    )
    rows = []
    for m in methods.values():
        ci = m["mean_ci95"]
        mean = _num(m["mean"]) + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else "")
        iqr = f"{_num(m['q25'])} - {_num(m['q75'])}" if m["q25"] is not None else "-"
        err = m["error_rate"]
        auroc = m.get("auroc") or {}
        auroc_cell = f"{_num(auroc['median'])} (n={auroc['n']})" if auroc.get("n") else "-"
        constant = m.get("constant_predictions") or {}
        constant_cell = str(m.get("n_constant") or 0) + (
            f" ({', '.join(f'{_e(k)}: {n}' for k, n in constant.items())})" if constant else ""
        )
        rows.append(
            f"<tr><td>{_e(m['explainer'])}</td><td>{_e(m['scorer'])}</td>"
            f'<td class="num">{m["n"]} / {m["n_total"]}</td>'
            f'<td class="num">{_num(m["median"])}</td><td class="num">{iqr}</td>'
            f'<td class="num">{mean}</td><td class="num">{auroc_cell}</td>'
            f'<td class="num">{constant_cell}</td>'
            f'<td class="num">{"-" if err is None else f"{100 * err:.1f}%"}</td>'
            f'<td class="num">{m["usage"]["total_tokens"]}</td>'
            f'<td class="num">{m["usage"]["cost_usd"]:.4f}</td></tr>'
        )
    return head + "".join(rows) + "</table>"


# the columns of the per-target table: the score, its baselines, then the strength reached
_TARGET_FIRST = ("score", "random_latents", "random_coder", "decoys")
_TARGET_LAST = ("kl", "value", "reached")


def by_target_html(summary: dict[str, Any]) -> str:
    """The score beside its baselines per target KL (`by_target` of the methods that intervene
    at calibrated strengths); empty when no method has one."""
    rows = []
    columns: list[str] = []
    for m in summary.get("methods", {}).values():
        for names in (m.get("by_target") or {}).values():
            columns += [n for n in names if n not in columns]
    middle = [n for n in columns if n not in (*_TARGET_FIRST, *_TARGET_LAST)]
    columns = [n for n in (*_TARGET_FIRST, *middle, *_TARGET_LAST) if n in columns]
    for m in summary.get("methods", {}).values():
        for target, names in (m.get("by_target") or {}).items():
            cells = []
            for name in columns:
                d = names.get(name) or {}
                if not d.get("n"):
                    cells.append('<td class="num">-</td>')
                    continue
                ci = d.get("mean_ci95")
                text = (
                    f"{100 * d['mean']:.0f}%"
                    if name == "reached"
                    else _num(d["mean"]) + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else "")
                )
                cells.append(f'<td class="num" title="n={d["n"]}">{text}</td>')
            rows.append(
                f"<tr><td>{_e(m['explainer'])}</td><td>{_e(m['scorer'])}</td>"
                f"<td>{_e(target)}</td>{''.join(cells)}</tr>"
            )
    if not rows:
        return ""
    head = "".join(f"<th>{_e(n)}</th>" for n in columns)
    return (
        "<h3>Per intervention strength</h3>"
        '<p class="muted">Mean [95% CI] of the score and of its baselines at each target KL '
        "(nats); reached: the share of latents whose calibration met the target.</p>"
        f"<table><tr><th>explainer</th><th>scorer</th><th>target</th>{head}</tr>"
        f"{''.join(rows)}</table>"
    )


def _explainers_table_html(summary: dict[str, Any]) -> str:
    explainers = summary.get("explainers", {})
    if not explainers:
        return ""
    rows = "".join(
        f'<tr><td>{_e(name)}</td><td class="num">{e["n_ok"]} / {e["n_total"]}</td>'
        f'<td class="num">{e["usage"]["prompt_tokens"]}</td>'
        f'<td class="num">{e["usage"]["completion_tokens"]}</td>'
        f'<td class="num">{e["usage"]["cost_usd"]:.4f}</td></tr>'
        for name, e in explainers.items()
    )
    return (
        "<table><tr><th>explainer</th><th>ok / total</th><th>prompt tokens</th>"
        f"<th>completion tokens</th><th>cost (USD)</th></tr>{rows}</table>"
    )


def results_table_html(results: RunResults, *, max_rows: int | None = None) -> str:
    """A compact HTML table of `results.table()` (also the Jupyter representation)."""
    rows = results.table()
    explainers, methods = results.explainers, results.methods
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ["latent", "status", *explainers, *(f"{e}/{s}" for e, s in methods)]
    )
    body = []
    shown = rows if max_rows is None else rows[:max_rows]
    for row in shown:
        cells = [f'<td class="num">{row["latent"]}</td>', f"<td>{_e(row['status'] or '-')}</td>"]
        cells += [f"<td>{_e(row[n] if row[n] is not None else '-')}</td>" for n in explainers]
        cells += [f'<td class="num">{_num(row[f"{e}/{s}"])}</td>' for e, s in methods]
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = (
        f'<p class="muted">… {len(rows) - len(shown)} more latents</p>'
        if len(shown) < len(rows)
        else ""
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def render_html(
    results: RunResults,
    *,
    title: str | None = None,
    max_examples: int = 10,
    threshold: float = 0.3,
    summary: dict[str, Any] | None = None,
) -> str:
    """The whole report page as a string."""
    if summary is None:
        summary = results.summary()
    run = summary.get("run", {})
    name = title or (results.run_dir.name if results.run_dir is not None else "saexplain run")
    manifest = results.manifest
    info = [
        ("model", run.get("model")),
        ("backend", manifest.get("backend")),
        ("coder", run.get("coder")),
        ("providers", manifest.get("providers")),
        ("seed", run.get("seed")),
        ("started", manifest.get("started")),
        ("latents", summary["latents"]["n"]),
        ("by status", ", ".join(f"{k}: {v}" for k, v in summary["latents"]["by_status"].items())),
        ("run by saexplain", run.get("saexplain_version")),
        ("report by saexplain", summary.get("saexplain_version")),
        ("plugins", _plugins_text(manifest.get("plugins"))),
    ]
    info_rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_brief(v))}</td></tr>"
        for k, v in info
        if v not in (None, "", [], {})
    )
    total = summary["usage"]["total"]
    by_method: dict[tuple[str, str], list[float]] = {}
    for s in results.scores:
        v = valid_value(s)
        if v is not None:
            by_method.setdefault((s.explainer, s.scorer), []).append(v)
    plots = []
    for m in summary["methods"].values():
        values = by_method.get((m["explainer"], m["scorer"]), [])
        label = f"{m['explainer']} / {m['scorer']}"
        plots.append(
            f"<figure>{histogram_svg(values, title=label)}"
            f"<figcaption>{_e(label)}: n={len(values)}</figcaption></figure>"
        )
    toc = "".join(
        f'<a href="#latent-{i}" title="{_e(r)}">{r.index}</a>'
        for i, r in enumerate(results.latents)
    )
    explainers = results.explainers
    sections = "".join(
        latent_html(
            res,
            explainers=explainers,
            position=i,
            max_examples=max_examples,
            threshold=threshold,
        )
        for i, res in enumerate(results)
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in results.notes)
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(name)} · saexplain report</title><style>{_css()}</style></head><body>",
            f"<h1>{_e(name)}</h1>",
            f"<table>{info_rows}</table>",
            f'<p class="muted">Tokens: {total["prompt_tokens"]} prompt + '
            f"{total['completion_tokens']} completion; cost ${total['cost_usd']:.4f}.</p>",
            f'<ul class="err">{notes}</ul>' if notes else "",
            "<h2>Scores per method</h2>",
            summary_table_html(summary),
            by_target_html(summary),
            _explainers_table_html(summary),
            f'<div class="plots">{"".join(plots)}</div>' if plots else "",
            _json_details("run configuration", results.config),
            _json_details("manifest", results.manifest),
            f'<h2>Latents</h2><nav class="toc">{toc}</nav>' if toc else "",
            sections,
            "</body></html>\n",
        ]
    )


def write_html(
    results: RunResults,
    path: str | Path,
    *,
    title: str | None = None,
    max_examples: int = 10,
    threshold: float = 0.3,
) -> Path:
    """Write the report page atomically; `max_examples` activating examples per group."""
    page = render_html(results, title=title, max_examples=max_examples, threshold=threshold)
    return atomic_write_text(path, page)
