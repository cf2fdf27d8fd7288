"""The overview's figures, made with plotly (imported here, only when a report is written).

Figures travel to the page as plotly JSON (`data` and `layout`) and are drawn there by the
local `plotly.min.js` (`Plotly.newPlot`); no figure is drawn in Python and nothing is fetched
from a CDN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")


def _range(values: Sequence[float]) -> list[float] | None:
    """0-1 for accuracies and fractions, -1-1 for correlations, else plotly's own range."""
    lo, hi = min(values), max(values)
    if lo >= 0 and hi <= 1:
        return [0.0, 1.0]
    if lo >= -1 and hi <= 1:
        return [-1.0, 1.0]
    return None


SHUFFLED_COLOR = "#9e9e9e"


def score_histogram(
    values: Sequence[float],
    *,
    title: str,
    color: str = COLORS[0],
    shuffled: Sequence[float] | None = None,
) -> Any:
    """A histogram of one method's valid scores, the median as a dashed line; with `shuffled`
    (the scores of its shuffled control) those are overlaid in grey, as the chance level."""
    import numpy as np
    import plotly.graph_objects as go  # type: ignore[import-untyped]  # plotly has no hints

    fig = go.Figure()
    if values:
        axis = _range([*values, *(shuffled or ())])
        bins = {"start": axis[0], "end": axis[1], "size": (axis[1] - axis[0]) / 20} if axis else {}
        fig.add_trace(
            go.Histogram(x=list(values), xbins=bins or None, marker_color=color, name="true")
        )
        if shuffled:
            fig.add_trace(
                go.Histogram(
                    x=list(shuffled),
                    xbins=bins or None,
                    marker_color=SHUFFLED_COLOR,
                    opacity=0.6,
                    name="shuffled",
                )
            )
        med = float(np.median(values))
        fig.add_vline(x=med, line_dash="dash", line_color="#b3261e")
        fig.add_annotation(
            x=med, y=1, yref="paper", text=f"median {med:.3f}", showarrow=False, yanchor="bottom"
        )
        if axis:
            fig.update_xaxes(range=axis)
    else:
        fig.add_annotation(
            text="no valid scores", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper"
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        width=340,
        height=220,
        margin={"l": 40, "r": 10, "t": 40, "b": 30},
        showlegend=bool(shuffled and values),
        legend={"orientation": "h", "y": -0.2, "font": {"size": 10}},
        barmode="overlay",
        bargap=0.05,
        template="plotly_white",
    )
    return fig


def figure_json(fig: Any) -> dict[str, Any]:
    """A figure as the plain JSON `Plotly.newPlot` takes (numpy arrays as lists)."""
    import plotly.io as pio  # type: ignore[import-untyped]

    data: dict[str, Any] = json.loads(pio.to_json(fig, validate=False))
    return {"data": data.get("data", []), "layout": data.get("layout", {})}
