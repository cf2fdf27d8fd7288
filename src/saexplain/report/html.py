"""The HTML report of a run: one self-contained folder, `<run>/report/`, that opens offline.

    index.html     the overview (server-rendered, every string through `html.escape`) and the
                   run's data as JSON in a `<script type="application/json">` block
    report.js      the page's own small script: the sortable, filterable latent table, each
                   latent's section rendered on demand, keyboard navigation, per-latent plots
    report.css     the styles
    plotly.min.js  plotly.js, written once, for the figures (no CDN)

Text from datasets, models and LLMs reaches the page only as JSON (`data.embed_json` escapes
`<`, `>`, `&` and U+2028/9) and is put into the DOM with `textContent`; a strict
Content-Security-Policy allows only the folder's own scripts, so no script in the data can run.
`<run>/report.html` is a small script-free page that points to `report/index.html`.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from saexplain.files import save
from saexplain.models import Example
from saexplain.render import clean_tokens
from saexplain.report.data import (
    embed_json,
    flags_by_latent,
    latent_data,
    latent_flags,
    median_ci,
    paired_baseline,
    score_values,
)
from saexplain.report.results import RunResults
from saexplain.rundir import FLAGS_FILE, control_name, control_of, read_json


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


# The page's policy: scripts only from the report folder (plotly.min.js, report.js); the JSON
# data block is not a script and never runs. Plotly sets inline styles, hence 'unsafe-inline'
# for styles only. No network: no connect, frame, object or form targets.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'"
)
ASSETS = ("report.css", "report.js")  # copied from this package into every report folder


def _asset(name: str) -> str:
    return resources.files("saexplain.report").joinpath(name).read_text(encoding="utf-8")


# --- pieces ---------------------------------------------------------------------------------------


def example_html(example: Example, *, latent_max: float | None = None) -> str:
    """One example as the report's latent sections show it (`report.js` `tokenLine`): every
    token a `<span>` coloured by its activation relative to `latent_max` (else the example's
    own max), the value on hover; the strongest token outlined. Styles are inline, so the
    markup stands alone (Jupyter has no report.css); every token is escaped."""
    acts = [a if math.isfinite(a) else 0.0 for a in example.activations]
    ref = latent_max if latent_max is not None and latent_max > 0 else max(acts, default=0.0)
    argmax = max(range(len(acts)), key=lambda i: acts[i], default=-1)
    if argmax >= 0 and acts[argmax] <= 0:
        argmax = -1
    out = []
    for i, (token, act) in enumerate(zip(clean_tokens(example.str_tokens), acts, strict=True)):
        alpha = min(1.0, max(0.0, act / ref)) if ref > 0 else 0.0
        outline = ";outline:1px solid #b3261e" if i == argmax else ""
        out.append(
            f'<span class="tok" style="background-color:rgba(255, 140, 0, {alpha:.3f})'
            f'{outline}" title="activation {act:.4g}">{_e(token)}</span>'
        )
    return (
        '<div class="ex" style="white-space:pre-wrap;font-family:monospace">'
        f'<span class="exmax" style="color:#666">max {example.max_activation:.3g} </span>'
        f"{''.join(out)}</div>"
    )


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
        if control_of(m["explainer"]) is not None:
            continue  # a shuffled control: shown beside its explainer (the medians table)
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
        if control_of(name) is None
    )
    return (
        "<table><tr><th>explainer</th><th>ok / total</th><th>prompt tokens</th>"
        f"<th>completion tokens</th><th>cost (USD)</th></tr>{rows}</table>"
    )


def results_table_html(results: RunResults, *, max_rows: int | None = None) -> str:
    """A compact HTML table of `results.table()` (also the Jupyter representation). Shuffled
    controls get no columns of their own: a score shows its control's in parentheses."""
    rows = results.table()
    explainers = [e for e in results.explainers if control_of(e) is None]
    present = set(results.methods)
    methods = [(e, s) for e, s in results.methods if control_of(e) is None]
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ["latent", "status", *explainers, *(f"{e}/{s}" for e, s in methods)]
    )

    def score_cell(row: dict[str, Any], e: str, s: str) -> str:
        text = _num(row[f"{e}/{s}"])
        if (control_name(e), s) in present:
            text += f" ({_num(row[f'{control_name(e)}/{s}'])})"
        return f'<td class="num">{text}</td>'

    body = []
    shown = rows if max_rows is None else rows[:max_rows]
    for row in shown:
        cells = [f'<td class="num">{row["latent"]}</td>', f"<td>{_e(row['status'] or '-')}</td>"]
        cells += [f"<td>{_e(row[n] if row[n] is not None else '-')}</td>" for n in explainers]
        cells += [score_cell(row, e, s) for e, s in methods]
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = (
        f'<p class="muted">… {len(rows) - len(shown)} more latents</p>'
        if len(shown) < len(rows)
        else ""
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _info_rows(results: RunResults, summary: dict[str, Any]) -> str:
    run = summary.get("run", {})
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
    return "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_brief(v))}</td></tr>"
        for k, v in info
        if v not in (None, "", [], {})
    )


CHANCE_LEGEND = (
    "shuffled: the same scorer on another latent's explanation (the run's shuffled controls), "
    "on the latents scored both ways; ≈ chance: fewer than 60% of them score their own "
    "explanation above the shuffled one."
)


def _median_ci_cells(values: list[float]) -> str:
    values = sorted(values)
    ci = median_ci(values)
    n = len(values)
    median = values[n // 2] if n % 2 else sum(values[n // 2 - 1 : n // 2 + 1]) / 2
    interval = "-" if ci is None else f"{_num(ci[0])} - {_num(ci[1])}"
    return (
        f'<td class="num">{n}</td><td class="num">{_num(median)}</td>'
        f'<td class="num">{interval}</td>'
    )


def _baseline_cells(base: dict[str, Any] | None) -> str:
    if base is None or not base["n"]:
        return '<td class="num">-</td><td class="num">-</td><td></td>'
    p = base["sign_test_p"]
    title = f"n={base['n']} latents scored both ways" + (
        "" if p is None else f"; one-sided sign test p={p:.3g}"
    )
    chance = (
        '<span class="chance" title="fewer than 60% of latents beat their shuffled control">'
        "≈ chance</span>"
        if base["at_chance"]
        else ""
    )
    return (
        f'<td class="num" title="{_e(title)}">{_num(base["median_true"])} vs '
        f"{_num(base['median_shuffled'])}</td>"
        f'<td class="num" title="{_e(title)}">{100 * base["frac_true_gt_shuffled"]:.0f}%</td>'
        f"<td>{chance}</td>"
    )


def _medians_html(results: RunResults) -> str:
    """Per method (and per coder, when the run has several): n, median and its 95%
    order-statistic interval (see `median_ci`), and beside them the shuffled control: median
    true vs median shuffled on the paired latents, the share of latents whose own explanation
    scores higher, and an "≈ chance" mark (`paired_baseline`)."""
    coders = sorted({ref.coder_id for ref in results.latents})
    groups: list[str | None] = [None] if len(coders) < 2 else list(coders)
    has_controls = any(control_of(e) is not None for e, _ in results.methods)
    rows = []
    for coder in groups:
        for (explainer, scorer), values in score_values(results, coder=coder).items():
            if control_of(explainer) is not None:
                continue
            cells = f"<td>{_e(coder)}</td>" if coder is not None else ""
            cells += f"<td>{_e(explainer)}</td><td>{_e(scorer)}</td>{_median_ci_cells(values)}"
            if has_controls:
                base = paired_baseline(results, explainer, scorer, coder=coder)
                cells += _baseline_cells(base)
            rows.append(f"<tr>{cells}</tr>")
    if not rows:
        return ""
    head = "<th>coder</th>" if groups != [None] else ""
    head += (
        "<th>explainer</th><th>scorer</th><th>n</th><th>median</th>"
        '<th title="distribution-free, from order statistics">median 95% CI</th>'
    )
    if has_controls:
        head += (
            '<th title="medians on the latents scored with both">true vs shuffled median</th>'
            "<th>true &gt; shuffled</th><th></th>"
        )
    legend = f'<p class="muted legend">{_e(CHANCE_LEGEND)}</p>' if has_controls else ""
    return f'<table class="medians"><tr>{head}</tr>{"".join(rows)}</table>{legend}'


def report_data(
    results: RunResults,
    *,
    max_examples: int = 10,
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON the page renders: the true explainers and methods (shuffled controls ride
    along with the score they are the baseline of), coders, flag labels, the overview's
    figures and one entry per latent (see `saexplain.report.data.latent_data`)."""
    from saexplain.report.plots import COLORS, figure_json, score_histogram

    by_latent = flags_by_latent(flags)
    explainers = [e for e in results.explainers if control_of(e) is None]
    methods = [(e, s) for e, s in results.methods if control_of(e) is None]
    latents = [
        latent_data(
            res,
            position=i,
            explainers=explainers,
            max_examples=max_examples,
            flags=latent_flags(res, by_latent),
        )
        for i, res in enumerate(results)
    ]
    values = score_values(results)
    figures = [
        figure_json(
            score_histogram(
                values.get(pair, []),
                title=f"{pair[0]} / {pair[1]}",
                color=COLORS[i % len(COLORS)],
                shuffled=values.get((control_name(pair[0]), pair[1])),
            )
        )
        for i, pair in enumerate(methods)
    ]
    labels = sorted({label for lat in latents for label in lat["flags"]})
    return {
        "explainers": explainers,
        "methods": [list(pair) for pair in methods],
        "coders": sorted({ref.coder_id for ref in results.latents}),
        "flags": labels,
        "figures": figures,
        "latents": latents,
    }


def _flags(results: RunResults) -> dict[str, Any] | None:
    return None if results.run_dir is None else read_json(results.run_dir / FLAGS_FILE)


def render_html(
    results: RunResults,
    *,
    title: str | None = None,
    max_examples: int = 10,
    summary: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> str:
    """The report's `index.html` as a string (its scripts and styles are separate files: see
    `write_html`)."""
    if summary is None:
        summary = results.summary()
    if data is None:
        data = report_data(results, max_examples=max_examples, flags=_flags(results))
    name = title or (results.run_dir.name if results.run_dir is not None else "saexplain run")
    total = summary["usage"]["total"]
    notes = "".join(f"<li>{_e(n)}</li>" for n in results.notes)
    plots = "".join(
        f'<div class="plot" data-figure="{i}"></div>' for i in range(len(data["figures"]))
    )
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(name)} · saexplain report</title>",
            '<link rel="stylesheet" href="report.css"></head><body>',
            f'<header><h1>{_e(name)}</h1><p class="muted keys">Keys: <kbd>j</kbd>/<kbd>k</kbd> '
            "or arrows move between latents, <kbd>/</kbd> searches, <kbd>Esc</kbd> leaves the "
            "search.</p></header>",
            '<section id="overview"><h2>Run</h2>',
            f"<table>{_info_rows(results, summary)}</table>",
            f'<p class="muted">Tokens: {total["prompt_tokens"]} prompt + '
            f"{total['completion_tokens']} completion; cost ${total['cost_usd']:.4f}.</p>",
            f'<ul class="err">{notes}</ul>' if notes else "",
            "<h2>Scores per method</h2>",
            summary_table_html(summary),
            _medians_html(results),
            by_target_html(summary),
            _explainers_table_html(summary),
            f'<div class="plots">{plots}</div>' if plots else "",
            _json_details("run configuration", results.config),
            _json_details("manifest", results.manifest),
            "</section>",
            '<section id="latents"><h2>Latents</h2>',
            '<div class="controls">',
            '<input id="search" type="search" placeholder="search explanations ( / )" '
            'aria-label="search explanations">',
            '<select id="coder-filter" aria-label="filter by coder" hidden></select>',
            '<select id="flag-filter" aria-label="filter by flag"></select>',
            '<select id="score-method" aria-label="method for the minimum score"></select>',
            '<input id="min-score" type="number" step="0.05" placeholder="min score" '
            'aria-label="minimum score">',
            '<span id="row-count" class="muted"></span></div>',
            '<div class="table-wrap"><table id="latent-table"><thead></thead><tbody></tbody>'
            "</table></div>",
            '<article id="latent-detail" aria-live="polite"><p class="muted">Select a latent '
            "(click a row, or press <kbd>j</kbd>).</p></article>",
            "</section>",
            "<noscript><p>The latent table and sections need JavaScript (the report's own "
            "report.js and plotly.min.js); the overview above does not.</p></noscript>",
            f'<script type="application/json" id="sx-data">{embed_json(data)}</script>',
            '<script src="plotly.min.js"></script><script src="report.js"></script>',
            "</body></html>\n",
        ]
    )


def write_html(
    results: RunResults,
    folder: str | Path,
    *,
    title: str | None = None,
    max_examples: int = 10,
    summary: dict[str, Any] | None = None,
) -> Path:
    """Write the report folder (`index.html`, `report.js`, `report.css`, `plotly.min.js`),
    each file atomically; returns the path of `index.html`. `max_examples` top and sampled
    examples per latent (and a third as many non-activating ones)."""
    folder = Path(folder)
    page = render_html(results, title=title, max_examples=max_examples, summary=summary)
    for name in ASSETS:
        save(folder / name, _asset(name))
    plotly_js = folder / "plotly.min.js"
    if not plotly_js.is_file() or plotly_js.stat().st_size == 0:
        # plotly.js, ~4.7 MB: written once per folder (plotly ships no type hints)
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

        save(plotly_js, get_plotlyjs())
    return save(folder / "index.html", page)


def write_redirect(path: str | Path, target: str = "report/index.html") -> Path:
    """A small script-free page at `path` that sends the browser to `target` (kept so that
    `<run>/report.html` still opens the report)."""
    href = _e(target)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0; url={href}">'
        f"<title>saexplain report</title></head><body>"
        f'<p>The report is in <a href="{href}">{href}</a>.</p></body></html>\n'
    )
    return save(path, page)


def read_report_data(index: str | Path) -> dict[str, Any]:
    """The data embedded in a written `index.html` (what `report_data` returned), for tests and
    tools that check a report without a browser."""
    page = Path(index).read_text(encoding="utf-8")
    start_tag = '<script type="application/json" id="sx-data">'
    start = page.index(start_tag) + len(start_tag)
    end = page.index("</script>", start)  # the embedded JSON never holds "<" (embed_json)
    data: dict[str, Any] = json.loads(page[start:end])
    return data
