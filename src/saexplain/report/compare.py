"""The HTML page of `saexplain compare --html OUT`: a plotly scatter of decoder cosine against
explanation similarity for the matched latent pairs, and the pairs as a table.

It is built as the run report is (`saexplain.report.html`): the page holds the data as JSON in a
`<script type="application/json">` block (`embed_json`), a small local script (`compare.js`)
draws it with the local `plotly.min.js` written beside the page (no CDN), and the same strict
Content-Security-Policy allows no other script. Explanations are LLM text: escaped in the table,
and set as plain hover text (plotly escapes it) in the plot.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.files import save
from saexplain.report.data import embed_json
from saexplain.report.html import CSP, _asset

if TYPE_CHECKING:
    from saexplain.analysis.similarity import Comparison

COMPARE_JS = "compare.js"
TABLE_ROWS = 200  # pairs listed in the page's table (the plot has them all)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _clip(text: str | None, limit: int = 120) -> str:
    if text is None:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def compare_figure(comparison: Comparison) -> dict[str, Any]:
    """The scatter as plotly JSON (`data`, `layout`), from `Comparison.to_json()["plot"]`, with
    each point's latents and explanations as hover text and the random-pair baseline as a
    dashed line."""
    data = comparison.to_json()
    plot = data["plot"]
    # the plot's points are the pairs with a similarity, in the same order
    pairs = [p for p in data["pairs"] if p["similarity"] is not None]
    # plotly reads a little HTML in hover text: every piece from the data is escaped (plotly
    # shows entities as characters), only our own <br> stay markup
    hover = [
        "<br>".join(
            _e(part)
            for part in (
                f"A {p['latent_a']} ↔ B {p['latent_b']}",
                f"A: {_clip(p['explanation_a'], 80)}",
                f"B: {_clip(p['explanation_b'], 80)}",
            )
        )
        for p in pairs
    ]
    layout: dict[str, Any] = {
        "title": {"text": f"{len(plot['x'])} matched pairs ({data['method']})"},
        "xaxis": {"title": {"text": plot["x_label"]}},
        "yaxis": {"title": {"text": plot["y_label"]}},
        "height": 480,
        "hovermode": "closest",
        "template": "plotly_white",
    }
    if plot["baseline"] is not None:
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": plot["baseline"],
                "y1": plot["baseline"],
                "line": {"dash": "dash", "color": "#b3261e"},
            }
        ]
        layout["annotations"] = [
            {
                "xref": "paper",
                "x": 1,
                "y": plot["baseline"],
                "text": f"random pairs {plot['baseline']:.3f}",
                "showarrow": False,
                "yanchor": "bottom",
                "xanchor": "right",
            }
        ]
    trace = {
        "type": "scatter",
        "mode": "markers",
        "x": plot["x"],
        "y": plot["y"],
        "hovertext": hover,
        "hoverinfo": "text",
        "marker": {"color": "#4c78a8", "size": 7, "opacity": 0.8},
    }
    return {"data": [trace], "layout": layout}


def render_compare_html(comparison: Comparison, *, title: str = "saexplain compare") -> str:
    """The page as a string (its scripts are separate files: see `write_compare_html`)."""
    data = comparison.to_json()
    mean, base = data["mean_similarity"], data["random_baseline"]
    rows = "".join(
        f'<tr><td class="num">{p["latent_a"]}</td><td class="num">{p["latent_b"]}</td>'
        f'<td class="num">{_num(p["cosine"])}</td><td class="num">{_num(p["similarity"])}</td>'
        f"<td>{_e(_clip(p['explanation_a']))}</td><td>{_e(_clip(p['explanation_b']))}</td></tr>"
        for p in data["pairs"][:TABLE_ROWS]
    )
    more = (
        f'<p class="muted">… {len(data["pairs"]) - TABLE_ROWS} more pairs (--json)</p>'
        if len(data["pairs"]) > TABLE_ROWS
        else ""
    )
    note = (
        "No explanation similarity: no explained pairs, or no embedder installed."
        if mean is None
        else f"Mean explanation similarity of matched pairs {mean:.3f}; random pairs "
        + ("-" if base is None else f"{base:.3f}")
        + "."
    )
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>{_e(title)}</title>",
            '<link rel="stylesheet" href="report.css"></head><body>',
            f"<header><h1>{_e(title)}</h1></header>",
            f"<p>{data['n_pairs']} pairs matched ({_e(data['method'])}). {_e(note)}</p>",
            '<div class="plot wide" id="compare-plot"></div>',
            '<h2>Matched pairs</h2><p class="muted">Highest decoder cosine first.</p>',
            "<table><tr><th>A</th><th>B</th><th>decoder cosine</th>"
            "<th>explanation similarity</th><th>explanation A</th><th>explanation B</th></tr>",
            rows,
            "</table>",
            more,
            f'<script type="application/json" id="sx-data">'
            f"{embed_json(compare_figure(comparison))}</script>",
            f'<script src="plotly.min.js"></script><script src="{COMPARE_JS}"></script>',
            "</body></html>\n",
        ]
    )


def write_compare_html(
    comparison: Comparison, path: str | Path, *, title: str = "saexplain compare"
) -> Path:
    """Write the page to `path`, and `compare.js`, `report.css` and (once) `plotly.min.js`
    beside it; returns `path`."""
    target = Path(path)
    page = render_compare_html(comparison, title=title)
    for name in (COMPARE_JS, "report.css"):
        save(target.parent / name, _asset(name))
    plotly_js = target.parent / "plotly.min.js"
    if not plotly_js.is_file() or plotly_js.stat().st_size == 0:
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

        save(plotly_js, get_plotlyjs())
    return save(target, page)
