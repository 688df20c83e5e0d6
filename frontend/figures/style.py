"""The look shared by every dashboard figure: colours, size limits, layout, menus, escaping.

Torch-free, like the whole package: the API process imports it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

#: At most this many points per CDF line, per-example scatter and density curve.
MAX_CDF_POINTS = 800
MAX_SCATTER_POINTS = 2000
MAX_CURVE_POINTS = 1000
HIST_BINS = 60
#: Top margin (px) of figures with buttons: the title above, the buttons just over the plot.
MENU_TOP = 88
#: A fixed ``uirevision`` so that ``Plotly.react`` keeps zoom and legend state on updates.
UIREVISION = "genscope"

#: One colour per run, stable across every figure of a page (Tableau 10, then darker tints).
RUN_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f3b5c",
    "#a0522d",
    "#8b1a2b",
    "#2f6f6a",
    "#2e5d27",
    "#9a7d0a",
    "#6b3f66",
    "#c2185b",
    "#5d4037",
    "#616161",
)
ACCENT = "#4e79a7"
MUTED = "#9aa5b1"
BAD = "#d62728"
GOOD = "#2ca02c"


def esc(text: Any) -> str:
    """Escape user text for plotly, which renders a subset of HTML (tags such as ``<b>``,
    ``<a href>``) in titles, legends and hover labels: ``&``, ``<`` and ``>`` become entities,
    which plotly draws as the characters themselves. Quotes need no escaping (they never reach
    an attribute) and plotly would show ``&quot;`` literally.

    >>> esc("<b>fc</b> & co")
    '&lt;b&gt;fc&lt;/b&gt; &amp; co'
    """
    return html.escape(str(text), quote=False)


def run_color(index: int) -> str:
    """The colour of the ``index``-th run of a page (the palette repeats past its end)."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def f32(values: Any) -> np.ndarray:
    """A float32 array for plotting: half the payload of float64, ample for a figure; ``None``
    and NaN become NaN (a gap in the line)."""
    return np.asarray(
        [np.nan if v is None else v for v in values] if isinstance(values, list) else values,
        dtype=np.float32,
    )


def line_budget(n_runs: int) -> int:
    """Points per line when ``n_runs`` lines share a figure (bounded total payload)."""
    return int(min(MAX_CDF_POINTS, max(200, 4000 // max(1, n_runs))))


def all_positive(values: Sequence[float | None]) -> bool:
    """Whether the numbers of ``values`` (``None`` skipped) exist and are all > 0: a log axis
    can show them."""
    vs = [v for v in values if v is not None]
    return bool(vs) and all(v > 0 for v in vs)


#: Tick format of a log axis spanning few decades: every tick prints its value (61.9, 0.002,
#: 5e-7), where plotly's default labels the ticks between powers of ten by their first digit
#: alone ("2", "5").
LOG_TICKFORMAT = "~g"
#: A log axis spanning more decades than this gets one labelled tick per decade (or per few
#: decades) written as a power of ten, with unlabelled minor ticks in between.
WIDE_LOG_DECADES = 4.0


def log_decades(values: Sequence[float | None] | Any) -> float:
    """How many decades the positive finite numbers of ``values`` span (0 when fewer than
    two)."""
    vs = [float(v) for v in np.ravel(np.asarray(values, dtype=object)) if _positive(v)]
    if len(vs) < 2:
        return 0.0
    return float(np.log10(max(vs) / min(vs)))


def _positive(v: Any) -> bool:
    if v is None or isinstance(v, bool):
        return False
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f)) and f > 0


def log_axis(values: Sequence[float | None] | Any = ()) -> dict[str, Any]:
    """Settings of a log axis whose tick labels read as numbers, for ``update_xaxes`` /
    ``update_yaxes``: up to ``WIDE_LOG_DECADES`` decades, plotly's ticks (1, 2, 5 per decade)
    printed in full by ``LOG_TICKFORMAT``; beyond, ``dtick`` whole decades (one per decade up
    to 8 decades, then every ⌈span/8⌉) labelled ``10ⁿ`` (``exponentformat="power"``), with the
    1…9 multiples as unlabelled minor ticks when every decade is labelled. Plotly never labels
    minor ticks, so the "2"/"5" digit labels cannot come back."""
    span = log_decades(values)
    if span <= WIDE_LOG_DECADES:
        return {"type": "log", "tickformat": LOG_TICKFORMAT, "exponentformat": "power"}
    step = max(1, int(np.ceil(span / 8)))
    settings: dict[str, Any] = {
        "type": "log",
        "dtick": step,
        "tickformat": "",
        "exponentformat": "power",
    }
    if step == 1:
        settings["minor"] = {"dtick": "D1", "ticks": "outside", "ticklen": 3, "showgrid": False}
    return settings


def trace_values(fig: go.Figure, axis: str) -> list[Any]:
    """Every ``x`` or ``y`` value of the figure's traces (to size a log axis by its data)."""
    out: list[Any] = []
    for trace in fig.data:
        values = getattr(trace, axis, None)
        if values is not None:
            out.extend(np.ravel(np.asarray(values, dtype=object)).tolist())
    return out


def style(
    fig: go.Figure,
    title: str = "",
    xtitle: str | None = None,
    ytitle: str | None = None,
    height: int = 360,
    legend: bool = True,
) -> go.Figure:
    """The house layout: white template, title top left, legend below the plot, run colours."""
    fig.update_layout(
        template="plotly_white",
        title={
            "text": title,
            "x": 0.01,
            "xanchor": "left",
            "xref": "container",
            "y": 0.985,
            "yref": "container",
            "yanchor": "top",
            "font": {"size": 14},
        },
        height=height,
        margin={"l": 56, "r": 16, "t": 48, "b": 48},
        font={
            "family": "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, sans-serif",
            "size": 12,
            "color": "#243447",
        },
        uirevision=UIREVISION,
        showlegend=legend,
        # below everything, whatever the plot's height (plotly grows the bottom margin for it)
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 0,
            "yanchor": "bottom",
            "x": 0,
            "font": {"size": 11},
        },
        hoverlabel={"namelength": -1},
        colorway=list(RUN_COLORS),
    )
    if xtitle is not None:
        fig.update_xaxes(title_text=xtitle)
    if ytitle is not None:
        fig.update_yaxes(title_text=ytitle)
    return fig


def menu(buttons: list[dict[str, Any]], x: float) -> dict[str, Any]:
    """A row of plotly buttons just above the plot, at the left (``x < 0.5``) or right."""
    return {
        "type": "buttons",
        "direction": "right",
        "buttons": buttons,
        "x": x,
        "xanchor": "left" if x < 0.5 else "right",
        "y": 1.02,
        "yanchor": "bottom",
        "showactive": True,
        "pad": {"r": 4, "t": 0},
        "bgcolor": "#f5f7fa",
        "bordercolor": "#d5dbe3",
        "font": {"size": 11},
    }


def axis_menu(axes: Sequence[str], x: float, label: str = "x") -> dict[str, Any]:
    """Linear / log buttons for the given axes (``xaxis``, ``yaxis2``...); the log button
    prints the ticks' values (``LOG_TICKFORMAT``)."""
    # each button also resets the ticks: a log axis's whole-decade dtick would be absurd on a
    # linear one, and plotly's default log labels print a lone digit between powers of ten
    lin: dict[str, Any] = {}
    log: dict[str, Any] = {}
    for a in axes:
        lin.update({f"{a}.type": "linear", f"{a}.dtick": None, f"{a}.tickformat": None})
        log.update({f"{a}.type": "log", f"{a}.dtick": None, f"{a}.tickformat": LOG_TICKFORMAT})
    return menu(
        [
            {"label": f"linear {label}", "method": "relayout", "args": [lin]},
            {"label": f"log {label}", "method": "relayout", "args": [log]},
        ],
        x=x,
    )


def kind_menu(labels: Sequence[str], counts: Sequence[int], axis: str) -> dict[str, Any] | None:
    """Buttons that show one kind at a time, when a figure holds ``counts[k]`` consecutive
    traces of each kind ``labels[k]``; the button also renames ``axis`` (e.g.
    ``xaxis.title.text``). ``None`` for a single kind."""
    if len(labels) < 2:
        return None
    total = sum(counts)
    buttons = []
    start = 0
    for label, c in zip(labels, counts, strict=True):
        visible = [start <= j < start + c for j in range(total)]
        buttons.append(
            {"label": label, "method": "update", "args": [{"visible": visible}, {axis: label}]}
        )
        start += c
    return menu(buttons, x=0.0)
