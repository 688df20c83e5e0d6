"""Dashboard figures: pure functions from reports (plain dicts, schema ``genscope.report/1``)
to plotly figures.

Every builder takes decoded report dicts and returns a ``plotly.graph_objects.Figure`` or
``None`` when the report lacks what the figure needs: a missing or malformed key never raises.
Long per-example arrays are summarised (histograms) or downsampled (CDFs, scatters) so that
payloads stay bounded; the minimum and maximum are always kept. Text that comes from users
(run names, layer names) is HTML-escaped before it reaches plotly, which renders a subset of
HTML in titles, legends and hover labels.

This module is torch-free: the API process imports it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.io.json import to_json_plotly
from plotly.subplots import make_subplots

from frontend.stats import (
    downsample_indices,
    downsample_pairs,
    ecdf,
    finite_array,
    histogram_density,
    kendall_tau_a,
    shared_edges,
)

#: At most this many points per CDF line, per-example scatter and density curve.
MAX_CDF_POINTS = 800
MAX_SCATTER_POINTS = 2000
MAX_CURVE_POINTS = 1000
HIST_BINS = 60
#: A comparison shows at most this many runs.
MAX_COMPARE_RUNS = 20
#: Top margin (px) of figures with buttons: the title above, the buttons just over the plot.
MENU_TOP = 88
#: A fixed ``uirevision`` so that ``Plotly.react`` keeps zoom and legend state on updates.
UIREVISION = "genscope"

#: One colour per run, stable across every figure of a page (Tableau 10, then lighter tints).
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

MARGIN_KINDS: tuple[tuple[str, str], ...] = (
    ("margin.output", "Output margin"),
    ("margin.all_layer", "All-layer margin"),
    ("margin.normalized", "Normalized margin"),
)

#: Metrics shown in scalar tables: (key, label, direction).
METRIC_ROWS: tuple[tuple[str, str, str | None], ...] = (
    ("train_accuracy", "Train accuracy", "higher_is_better"),
    ("test_accuracy", "Test accuracy", "higher_is_better"),
    ("generalization_gap", "Generalization gap", "lower_is_better"),
    ("train_loss", "Train loss", "lower_is_better"),
    ("test_loss", "Test loss", "lower_is_better"),
)


@dataclass
class FigureSpec:
    """A figure with the page section it belongs to and a short description."""

    id: str
    title: str
    section: str
    figure: go.Figure
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """A JSON-ready dict; the figure as plotly's own JSON structure."""
        return {
            "id": self.id,
            "title": self.title,
            "section": self.section,
            "description": self.description,
            "figure": self.figure.to_plotly_json(),
            **self.extra,
        }


# --------------------------------------------------------------------------- helpers


def esc(text: Any) -> str:
    """Escape user text for plotly, which renders a subset of HTML (tags such as ``<b>``,
    ``<a href>``) in titles, legends and hover labels: ``&``, ``<`` and ``>`` become entities,
    which plotly draws as the characters themselves. Quotes need no escaping (they never reach
    an attribute) and plotly would show ``&quot;`` literally."""
    return html.escape(str(text), quote=False)


def run_color(index: int) -> str:
    """The colour of the ``index``-th run of a page."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def num(value: Any) -> float | None:
    """``value`` as a finite float, or ``None``."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (for defensive lookups)."""
    return value if isinstance(value, Mapping) else {}


def measures_of(report: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The report's measures that are dicts (an empty dict when there are none)."""
    if not isinstance(report, Mapping):
        return {}
    ms = report.get("measures")
    if not isinstance(ms, Mapping):
        return {}
    return {k: v for k, v in ms.items() if isinstance(v, dict)}


def measure(report: Mapping[str, Any] | None, mid: str) -> dict[str, Any] | None:
    """One measure's entry when it exists and did not fail."""
    m = measures_of(report).get(mid)
    if m is None or m.get("status", "ok") not in ("ok", None):
        return None
    return m


def metric(report: Mapping[str, Any] | None, key: str) -> float | None:
    """A metric of the report (``test_error`` derived from accuracy when absent)."""
    if not isinstance(report, Mapping) or not isinstance(report.get("metrics"), Mapping):
        return None
    metrics = report["metrics"]
    value = num(metrics.get(key))
    if value is None and key in ("train_error", "test_error"):
        acc = num(metrics.get(key.replace("error", "accuracy")))
        value = None if acc is None else 1.0 - acc
    return value


def _list(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, (list, tuple)) else None


def _first(m: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in m and m[k] is not None:
            return m[k]
    return None


def _numbers(value: Any) -> list[float | None] | None:
    """A list of numbers-or-None, or ``None`` when ``value`` is not a flat numeric list."""
    seq = _list(value)
    if seq is None or any(isinstance(v, (list, tuple, dict)) for v in seq):
        return None
    return [num(v) for v in seq]


def _matrix(value: Any) -> list[list[float | None]] | None:
    rows = _list(value)
    if not rows or not all(isinstance(r, (list, tuple)) for r in rows):
        return None
    return [[num(v) for v in r] for r in rows]


def _style(
    fig: go.Figure,
    title: str = "",
    xtitle: str | None = None,
    ytitle: str | None = None,
    height: int = 360,
    legend: bool = True,
) -> go.Figure:
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


def f32(values: Any) -> np.ndarray:
    """A float32 array for plotting: half the payload of float64, ample for a figure; NaN
    stays NaN (a gap in the line)."""
    return np.asarray(
        [np.nan if v is None else v for v in values] if isinstance(values, list) else values,
        dtype=np.float32,
    )


def _line_budget(n_runs: int) -> int:
    """Points per line when ``n_runs`` lines share a figure (bounded total payload)."""
    return int(min(MAX_CDF_POINTS, max(200, 4000 // max(1, n_runs))))


def _positive(values: Sequence[float | None]) -> bool:
    vs = [v for v in values if v is not None]
    return bool(vs) and all(v > 0 for v in vs)


# --------------------------------------------------------------------------- margins


def margin_values(report: Mapping[str, Any] | None, mid: str) -> np.ndarray:
    """The finite per-example values of a margin measure (empty when absent)."""
    m = measure(report, mid)
    if m is None:
        return np.zeros(0)
    return finite_array(_numbers(m.get("values")) or [])


def margin_distribution(report: Mapping[str, Any]) -> go.Figure | None:
    """Histogram (density) and CDF of each margin kind of one run, one kind shown at a time
    (a menu switches output / all-layer / normalized), with a linear/log x toggle."""
    kinds = [(mid, label, margin_values(report, mid)) for mid, label in MARGIN_KINDS]
    kinds = [k for k in kinds if len(k[2])]
    if not kinds:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    per_kind = 2
    for i, (mid, label, values) in enumerate(kinds):
        centers, density, edges = histogram_density(values, bins=HIST_BINS)
        width = float(edges[1] - edges[0]) if len(edges) > 1 else None
        fig.add_trace(
            go.Bar(
                x=f32(centers),
                y=f32(density),
                width=width,
                name=f"{label} histogram",
                marker={"color": ACCENT, "line": {"width": 0}},
                visible=i == 0,
                hovertemplate="%{x:.4g}: density %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        xs, fs = ecdf(values, MAX_CDF_POINTS)
        fig.add_trace(
            go.Scatter(
                x=f32(xs),
                y=f32(fs),
                mode="lines",
                line={"shape": "hv", "color": ACCENT, "width": 2},
                name=f"{label} CDF",
                visible=i == 0,
                hovertemplate="margin %{x:.4g}: F = %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=2,
        )
        _ = mid
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_yaxes(title_text="fraction of examples ≤ x", range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text=kinds[0][1], row=1, col=1)
    fig.update_xaxes(title_text=kinds[0][1], row=1, col=2)
    menus = []
    if len(kinds) > 1:
        buttons = []
        for i, (_mid, label, _v) in enumerate(kinds):
            visible = [j // per_kind == i for j in range(per_kind * len(kinds))]
            buttons.append(
                {
                    "label": label,
                    "method": "update",
                    "args": [
                        {"visible": visible},
                        {"xaxis.title.text": label, "xaxis2.title.text": label},
                    ],
                }
            )
        menus.append(_menu(buttons, x=0.0))
    menus.append(_axis_menu(["xaxis", "xaxis2"], x=1.0 if len(kinds) > 1 else 0.0))
    _style(fig, "Margin distribution", legend=False, height=380)
    fig.update_layout(updatemenus=menus, margin={"t": MENU_TOP})
    return fig


def _menu(buttons: list[dict[str, Any]], x: float) -> dict[str, Any]:
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


def _axis_menu(axes: Sequence[str], x: float, label: str = "x") -> dict[str, Any]:
    lin = {f"{a}.type": "linear" for a in axes}
    log = {f"{a}.type": "log" for a in axes}
    return _menu(
        [
            {"label": f"linear {label}", "method": "relayout", "args": [lin]},
            {"label": f"log {label}", "method": "relayout", "args": [log]},
        ],
        x=x,
    )


def margin_per_class(report: Mapping[str, Any]) -> go.Figure | None:
    """Per-class margin quantiles (p10, p25, p50, p75, p90) as boxes, one per class, so each
    class can be toggled from the legend; one menu entry per margin kind that has them."""
    kinds = []
    for mid, label in MARGIN_KINDS:
        m = measure(report, mid)
        rows = _list(m.get("per_class")) if m else None
        rows = [r for r in rows or [] if isinstance(r, dict) and num(r.get("p50")) is not None]
        if rows:
            kinds.append((label, rows))
    if not kinds:
        return None
    fig = go.Figure()
    counts = []
    for i, (label, rows) in enumerate(kinds):
        separate = len(rows) <= 20
        groups = [[r] for r in rows] if separate else [rows]
        for group in groups:
            names = [esc(r.get("class", "?")) for r in group]
            fig.add_trace(
                go.Box(
                    x=[f"class {n}" for n in names],
                    q1=[num(r.get("p25")) for r in group],
                    median=[num(r.get("p50")) for r in group],
                    q3=[num(r.get("p75")) for r in group],
                    lowerfence=[num(r.get("p10")) for r in group],
                    upperfence=[num(r.get("p90")) for r in group],
                    mean=[num(r.get("mean")) for r in group],
                    name=f"class {names[0]}" if separate else label,
                    marker={"color": run_color(len(fig.data)) if separate else ACCENT},
                    visible=i == 0,
                    showlegend=separate,
                    hovertext=[f"{r.get('count', '?')} examples" for r in group],
                )
            )
        counts.append(len(groups))
    if len(kinds) > 1:
        total = sum(counts)
        buttons = []
        start = 0
        for (label, _rows), c in zip(kinds, counts, strict=True):
            visible = [start <= j < start + c for j in range(total)]
            buttons.append(
                {
                    "label": label,
                    "method": "update",
                    "args": [{"visible": visible}, {"yaxis.title.text": label}],
                }
            )
            start += c
        fig.update_layout(updatemenus=[_menu(buttons, x=0.0)], margin={"t": MENU_TOP})
    _style(fig, "Margin per class (whiskers p10-p90, box p25-p75)", None, kinds[0][0])
    fig.add_hline(y=0, line={"color": MUTED, "dash": "dot", "width": 1})
    if len(kinds) > 1:
        fig.update_layout(margin={"t": MENU_TOP})
    return fig


def margin_class_cdf(report: Mapping[str, Any]) -> go.Figure | None:
    """Output-margin CDF per class, drawn when the report carries per-example ``labels``.
    Every class is a legend entry (click to toggle; double-click to isolate)."""
    m = measure(report, "margin.output")
    if m is None:
        return None
    values = _numbers(m.get("values"))
    labels = _list(m.get("labels"))
    if not values or not labels or len(labels) != len(values):
        return None
    by_class: dict[Any, list[float]] = {}
    for v, y in zip(values, labels, strict=True):
        if v is not None:
            by_class.setdefault(y, []).append(v)
    if not by_class:
        return None
    fig = go.Figure()
    per_line = max(50, MAX_CDF_POINTS // max(1, len(by_class)))
    for i, (cls, vals) in enumerate(sorted(by_class.items(), key=lambda kv: str(kv[0]))):
        xs, fs = ecdf(vals, per_line)
        fig.add_trace(
            go.Scatter(
                x=f32(xs),
                y=f32(fs),
                mode="lines",
                line={"shape": "hv", "color": run_color(i), "width": 1.5},
                name=f"class {esc(cls)}",
            )
        )
    return _style(fig, "Output margin CDF per class", "Output margin", "fraction ≤ x")


def _paired_margins(report: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    out = measure(report, "margin.output")
    al = measure(report, "margin.all_layer")
    if out is None or al is None:
        return None
    ov = _numbers(out.get("values"))
    av = _numbers(al.get("values"))
    if not ov or not av:
        return None
    idx = _list(al.get("indices"))
    if idx is None and isinstance(al.get("sample"), dict):
        idx = _list(al["sample"].get("indices"))
    if idx is not None and len(idx) == len(av):
        try:
            ov = [ov[int(i)] for i in idx]
        except (IndexError, TypeError, ValueError):
            return None
    elif len(ov) != len(av):
        return None
    pairs = [(a, b) for a, b in zip(ov, av, strict=True) if a is not None and b is not None]
    if not pairs:
        return None
    arr = np.asarray(pairs, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def margin_scatter(report: Mapping[str, Any]) -> go.Figure | None:
    """All-layer margin against output margin per training example (downsampled to at most
    ``MAX_SCATTER_POINTS``, extremes kept); misclassified examples in red."""
    pair = _paired_margins(report)
    if pair is None:
        return None
    x, y, _ = downsample_pairs(pair[0], pair[1], MAX_SCATTER_POINTS)
    wrong = x <= 0
    fig = go.Figure()
    for mask, name, color in ((~wrong, "correct", ACCENT), (wrong, "misclassified", BAD)):
        if mask.any():
            fig.add_trace(
                go.Scatter(
                    x=f32(x[mask]),
                    y=f32(y[mask]),
                    mode="markers",
                    name=name,
                    marker={"size": 4, "color": color, "opacity": 0.6},
                    hovertemplate="output %{x:.4g}<br>all-layer %{y:.4g}<extra></extra>",
                )
            )
    _style(fig, "All-layer vs output margin (per example)", "Output margin", "All-layer margin")
    fig.update_layout(updatemenus=[_axis_menu(["yaxis"], x=1.0, label="y")], margin={"t": MENU_TOP})
    return fig


def _named_values(raw: Any, names: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """(name, value) pairs from a dict, a list of dicts or a list aligned with ``names``."""
    out: list[tuple[str, float]] = []
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            value = num(v) if not isinstance(v, Mapping) else num(_first(v, _VALUE_KEYS))
            if value is not None:
                out.append((str(k), value))
    elif isinstance(raw, (list, tuple)):
        for i, item in enumerate(raw):
            if isinstance(item, Mapping):
                name = _first(item, ("name", "point", "layer"))
                value = num(_first(item, _VALUE_KEYS))
            else:
                name = names[i] if names and i < len(names) else None
                value = num(item)
            if value is not None:
                out.append((str(name if name is not None else i), value))
    return out


_VALUE_KEYS = ("share", "fraction", "value", "mean", "mean_share", "load")


def layer_shares(report: Mapping[str, Any]) -> go.Figure | None:
    """Where the all-layer perturbation concentrates: the share of ‖δ‖² per perturbation
    point (mean over examples)."""
    m = measure(report, "margin.all_layer")
    if m is None:
        return None
    points = [
        str(p.get("name")) if isinstance(p, Mapping) else str(p)
        for p in _list(m.get("points")) or []
    ]
    raw = _first(
        m,
        (
            "loads",
            "layer_shares",
            "shares",
            "layer_share",
            "per_layer",
            "perturbation_shares",
            "point_shares",
            "layer_loads",
        ),
    )
    pairs = _named_values(raw, points)
    if not pairs:
        return None
    fig = go.Figure(
        go.Bar(
            x=[esc(n) for n, _ in pairs],
            y=[v for _, v in pairs],
            marker={"color": ACCENT},
            hovertemplate="%{x}: %{y:.3g}<extra></extra>",
        )
    )
    return _style(
        fig, "All-layer perturbation per layer", "perturbation point", "share", legend=False
    )


def hidden_margins(report: Mapping[str, Any]) -> go.Figure | None:
    """Jiang et al. 2019 margin signatures per layer: a box from Q1 to Q3 around the median,
    whiskers at the fences (Q1 − 1.5 IQR, Q3 + 1.5 IQR), normalized by the layer's spread."""
    m = measure(report, "margin.hidden")
    rows = []
    for item in _list(m.get("layers")) or [] if m else []:
        sig = item.get("signature") if isinstance(item, Mapping) else None
        if isinstance(sig, Mapping) and num(sig.get("q2")) is not None:
            rows.append((str(_first(item, ("point", "name", "layer"))), sig))
    if not rows:
        return None
    fig = go.Figure(
        go.Box(
            x=[esc(name) for name, _ in rows],
            q1=[num(sig.get("q1")) for _, sig in rows],
            median=[num(sig.get("q2")) for _, sig in rows],
            q3=[num(sig.get("q3")) for _, sig in rows],
            lowerfence=[num(sig.get("lower_fence")) for _, sig in rows],
            upperfence=[num(sig.get("upper_fence")) for _, sig in rows],
            marker={"color": ACCENT},
            name="signature",
        )
    )
    _style(fig, "Hidden-layer margin signatures", "layer (input first)", "normalized margin")
    fig.update_layout(showlegend=False)
    fig.add_hline(y=0, line={"color": MUTED, "dash": "dot", "width": 1})
    return fig


def robust_accuracy(report: Mapping[str, Any]) -> go.Figure | None:
    """Fraction of training examples whose smallest flipping input perturbation exceeds ε,
    for L2 and L∞ perturbations (``margin.robust``)."""
    m = measure(report, "margin.robust")
    rows = [r for r in _list(m.get("robust_accuracy")) or [] if isinstance(r, Mapping)] if m else []
    rows = sorted(
        (r for r in rows if num(r.get("eps")) is not None), key=lambda r: num(r["eps"]) or 0.0
    )
    if not rows:
        return None
    fig = go.Figure()
    for i, key in enumerate(("l2", "linf")):
        ys = [num(r.get(key)) for r in rows]
        if any(v is not None for v in ys):
            fig.add_trace(
                go.Scatter(
                    x=[num(r["eps"]) for r in rows],
                    y=ys,
                    mode="lines+markers",
                    name="L2" if key == "l2" else "L∞",
                    line={"color": run_color(i)},
                    marker={"color": run_color(i)},
                )
            )
    if not fig.data:
        return None
    _style(fig, "Robust training accuracy vs ε", "perturbation radius ε", "robust accuracy")
    fig.update_yaxes(range=[0, 1.02])
    return fig


# --------------------------------------------------------------------------- curvature


def hessian_eigenvalues(report: Mapping[str, Any]) -> go.Figure | None:
    """Top Hessian (and GGN, when present) eigenvalues by rank, residuals in the hover; log
    y when all are positive."""
    fig = go.Figure()
    all_values: list[float | None] = []
    for i, (mid, label) in enumerate(
        (("hessian.top_eigenvalues", "Hessian"), ("ggn.top_eigenvalues", "GGN"))
    ):
        m = measure(report, mid)
        values = _numbers(m.get("values")) if m else None
        if m is None or not values:
            continue
        residuals = _numbers(m.get("residuals")) or []
        text = [
            f"residual {residuals[j]:.2g}"
            if j < len(residuals) and residuals[j] is not None
            else ""
            for j in range(len(values))
        ]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(values) + 1)),
                y=values,
                mode="lines+markers",
                name=label,
                text=text,
                marker={"size": 8, "color": run_color(i)},
                hovertemplate="λ%{x} = %{y:.5g}<br>%{text}<extra>" + label + "</extra>",
            )
        )
        all_values += values
    if not fig.data:
        return None
    _style(fig, "Top eigenvalues", "rank", "eigenvalue")
    fig.update_xaxes(dtick=1)
    if _positive(all_values):
        fig.update_yaxes(type="log")
    m = measure(report, "hessian.min_eigenvalue")
    low = num(m.get("value")) if m else None
    if low is not None:
        fig.add_annotation(
            text=f"λ_min = {low:.3g}", xref="paper", yref="paper", x=1, y=1, showarrow=False
        )
    return fig


def _outliers(m: Mapping[str, Any]) -> list[float]:
    raw = _first(m, ("outliers", "outlier_eigenvalues"))
    if isinstance(raw, Mapping):  # {"count", "values", "above", "below", "bulk", "rule"}
        raw = raw.get("values")
    out: list[float] = []
    for item in _list(raw) or []:
        v = (
            num(_first(item, ("value", "eigenvalue", "node", "theta")))
            if isinstance(item, Mapping)
            else num(item)
        )
        if v is not None:
            out.append(v)
    return out


def _density_curve(
    m: Mapping[str, Any] | None, max_points: int = MAX_CURVE_POINTS
) -> tuple[list[float], list[float]] | None:
    if m is None:
        return None
    grid = _numbers(_first(m, ("grid", "x", "eigenvalues")))
    dens = _numbers(_first(m, ("density", "y", "values")))
    if not grid or not dens or len(grid) != len(dens):
        return None
    pts = [(g, d) for g, d in zip(grid, dens, strict=True) if g is not None and d is not None]
    if not pts:
        return None
    idx = downsample_indices(len(pts), max_points, keep=[int(np.argmax([p[1] for p in pts]))])
    pts = [pts[int(i)] for i in idx]
    peak = max(d for _, d in pts)
    floor = peak * 1e-12 if peak > 0 else 1e-300
    return [g for g, _ in pts], [max(d, floor) for _, d in pts]


def _density_trace_xy(curve: tuple[list[float], list[float]]) -> dict[str, np.ndarray]:
    return {"x": f32(curve[0]), "y": f32(curve[1])}


def hessian_density(report: Mapping[str, Any]) -> go.Figure | None:
    """Spectral density (SLQ, Gaussian-smoothed) on a log density axis, outliers marked."""
    fig = go.Figure()
    peak = 0.0
    for i, (mid, label) in enumerate((("hessian.density", "Hessian"), ("ggn.density", "GGN"))):
        m = measure(report, mid)
        curve = _density_curve(m)
        if curve is None or m is None:
            continue
        fig.add_trace(
            go.Scatter(
                **_density_trace_xy(curve),
                mode="lines",
                name=f"{label} density",
                line={"color": run_color(i), "width": 1.5},
                hovertemplate="λ = %{x:.4g}: %{y:.3g}<extra></extra>",
            )
        )
        peak = max(peak, max(curve[1]))
        outs = _outliers(m)
        if outs:
            fig.add_trace(
                go.Scatter(
                    x=outs,
                    y=[peak * (3.0 if i == 0 else 1.0)] * len(outs),
                    mode="markers",
                    name=f"{label} outliers",
                    marker={
                        "symbol": "triangle-down",
                        "size": 9,
                        "color": run_color(i),
                        "line": {"color": "#243447", "width": 0.5},
                    },
                    hovertemplate="outlier λ = %{x:.5g}<extra></extra>",
                )
            )
    if not fig.data:
        return None
    _style(fig, "Spectral density", "eigenvalue λ", "density (log)")
    fig.update_yaxes(type="log", exponentformat="power")
    return fig


def _layer_rows(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = _first(m, ("layers", "per_layer", "blocks", "spectra"))
    rows: list[dict[str, Any]] = []
    if isinstance(raw, Mapping):
        raw = [{"name": k, **v} for k, v in raw.items() if isinstance(v, Mapping)]
    for item in _list(raw) or []:
        if not isinstance(item, Mapping):
            continue
        rows.append(
            {
                "name": str(_first(item, ("name", "layer", "param", "block")) or len(rows)),
                "top": num(
                    _first(
                        item,
                        ("top_eigenvalue", "lambda_max", "max_eigenvalue", "top", "eigenvalue"),
                    )
                ),
                "trace": num(item.get("trace")),
            }
        )
    return rows


def layer_spectra(report: Mapping[str, Any]) -> go.Figure | None:
    """Top eigenvalue and trace of each layer's diagonal Hessian block (grouped bars)."""
    m = measure(report, "hessian.layer_spectra")
    rows = _layer_rows(m) if m else []
    if not rows:
        return None
    names = [esc(r["name"]) for r in rows]
    fig = go.Figure()
    for i, (key, label) in enumerate((("top", "λ_max"), ("trace", "trace"))):
        ys = [r[key] for r in rows]
        if any(v is not None for v in ys):
            fig.add_trace(go.Bar(x=names, y=ys, name=label, marker={"color": run_color(i)}))
    if not fig.data:
        return None
    _style(fig, "Per-layer Hessian blocks", "layer", "value")
    fig.update_layout(barmode="group")
    if _positive([r["top"] for r in rows] + [r["trace"] for r in rows]):
        fig.update_yaxes(type="log")
    return fig


# --------------------------------------------------------------------------- sharpness


def _rho_curve(m: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    raw = _first(m, ("curve", "rho_curve", "sweep", "rho_sweep", "rhos_curve"))
    rhos: list[float | None] | None = None
    vals: list[float | None] | None = None
    if isinstance(raw, Mapping):
        rhos = _numbers(_first(raw, ("rho", "rhos", "x")))
        vals = _numbers(_first(raw, ("value", "values", "sharpness", "y")))
    elif isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], Mapping):
        rhos = [num(_first(r, ("rho", "x"))) for r in raw if isinstance(r, Mapping)]
        vals = [num(_first(r, ("value", "sharpness", "y"))) for r in raw if isinstance(r, Mapping)]
    elif "rhos" in m:
        rhos = _numbers(m.get("rhos"))
        vals = _numbers(_first(m, ("values", "sharpness_values", "curve_values")))
    if not rhos or not vals or len(rhos) != len(vals):
        return None
    pts = sorted((r, v) for r, v in zip(rhos, vals, strict=True) if r is not None and v is not None)
    if len(pts) < 2:
        return None
    return [p[0] for p in pts], [p[1] for p in pts]


def sharpness_curves(report: Mapping[str, Any]) -> go.Figure | None:
    """Sharpness against the perturbation radius ρ, one line per sharpness measure that
    recorded a ρ sweep (log-log when all positive)."""
    fig = go.Figure()
    xs_all: list[float | None] = []
    ys_all: list[float | None] = []
    for mid, m in measures_of(report).items():
        if not mid.startswith("sharpness.") or m.get("status", "ok") != "ok":
            continue
        curve = _rho_curve(m)
        if curve is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=curve[0],
                y=curve[1],
                mode="lines+markers",
                name=esc(mid),
                marker={"color": run_color(len(fig.data))},
                line={"color": run_color(len(fig.data))},
            )
        )
        xs_all += curve[0]
        ys_all += curve[1]
    if not fig.data:
        return None
    _style(fig, "Sharpness vs radius ρ", "ρ", "sharpness")
    if _positive(xs_all):
        fig.update_xaxes(type="log")
    if _positive(ys_all):
        fig.update_yaxes(type="log")
    return fig


def flatness_search(report: Mapping[str, Any]) -> go.Figure | None:
    """The PAC-Bayes flatness searches (Jiang et al. 2020): training accuracy under weight
    noise against the noise scale σ, with the σ found (accuracy within 0.1 of the clean one)."""
    fig = go.Figure()
    for mid, label, key in (
        ("sharpness.pacbayes_flatness", "N(0, σ²I)", "sigma"),
        ("sharpness.pacbayes_mag_flatness", "magnitude-aware σ'", "sigma_prime"),
    ):
        m = measure(report, mid)
        evals = (
            [e for e in _list(m.get("evaluations")) or [] if isinstance(e, Mapping)] if m else []
        )
        pts = sorted(
            (num(e.get("sigma")), num(e.get("accuracy")), num(e.get("stderr")))
            for e in evals
            if num(e.get("sigma")) is not None and num(e.get("accuracy")) is not None
        )
        if not pts or m is None:
            continue
        color = run_color(len(fig.data))
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                error_y={"type": "data", "array": [p[2] or 0 for p in pts], "visible": True},
                mode="markers+lines",
                name=label,
                line={"color": color},
                marker={"color": color},
                hovertemplate="σ = %{x:.4g}: accuracy %{y:.3f}<extra>" + label + "</extra>",
            )
        )
        found = num(m.get(key))
        if found is not None:
            fig.add_vline(x=found, line={"color": color, "dash": "dot", "width": 1})
        clean = num(m.get("clean_accuracy"))
        if clean is not None:
            fig.add_hline(
                y=clean - 0.1,
                line={"color": MUTED, "dash": "dash", "width": 1},
                annotation_text="clean accuracy − 0.1",
                annotation_position="bottom left",
            )
    if not fig.data:
        return None
    _style(fig, "PAC-Bayes flatness search", "noise scale σ", "training accuracy under noise")
    return fig


def ntk_spectrum(report: Mapping[str, Any]) -> go.Figure | None:
    """Eigenvalues of the empirical neural tangent kernel on a sample, by rank (log scale)."""
    m = measure(report, "ntk.spectrum")
    values = [v for v in (_numbers(m.get("eigenvalues")) or []) if v is not None] if m else []
    if not values:
        return None
    values = sorted(values, reverse=True)
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(values) + 1)),
            y=values,
            mode="lines+markers",
            marker={"size": 4, "color": ACCENT},
            line={"color": ACCENT},
            name="NTK eigenvalue",
            hovertemplate="rank %{x}: %{y:.4g}<extra></extra>",
        )
    )
    _style(fig, "Empirical NTK spectrum", "rank", "eigenvalue", legend=False)
    if _positive(values):
        fig.update_yaxes(type="log", exponentformat="power")
    return fig


def complexity_layers(report: Mapping[str, Any]) -> go.Figure | None:
    """Per-layer norms behind the norm-based complexity measures and bounds (spectral and
    Frobenius norm of each affine map, BatchNorm folded)."""
    rows: dict[str, dict[str, float | None]] = {}
    for mid in ("complexity.spectral", "complexity.frobenius"):
        m = measure(report, mid)
        for item in _list(m.get("layers")) or [] if m else []:
            if isinstance(item, Mapping):
                name = str(_first(item, ("name", "layer")) or len(rows))
                row = rows.setdefault(name, {})
                for key in ("spectral", "frobenius"):
                    if num(item.get(key)) is not None:
                        row[key] = num(item.get(key))
    if not rows:
        return None
    names = list(rows)
    fig = go.Figure()
    for i, (key, label) in enumerate((("spectral", "spectral norm"), ("frobenius", "Frobenius"))):
        ys = [rows[n].get(key) for n in names]
        if any(v is not None for v in ys):
            fig.add_trace(
                go.Bar(x=[esc(n) for n in names], y=ys, name=label, marker={"color": run_color(i)})
            )
    if not fig.data:
        return None
    _style(fig, "Per-layer norms", "layer", "norm")
    fig.update_layout(barmode="group")
    return fig


# --------------------------------------------------------------------------- landscape

_COORD_KEYS = ("alphas", "alpha", "coordinates", "t", "ts", "steps", "x", "xs", "grid")
_LOSS_KEYS = ("loss", "losses", "train_loss", "loss_values", "values", "z")


def _line_series(m: Mapping[str, Any]) -> tuple[list[float | None], list[list[float | None]]]:
    xs = _numbers(_first(m, _COORD_KEYS)) or []
    raw = _first(m, _LOSS_KEYS)
    lines = _matrix(raw)
    if lines is None:
        one = _numbers(raw)
        lines = [one] if one else []
    lines = [line for line in lines if len(line) == len(xs)]
    return xs, lines


def landscape_1d(report: Mapping[str, Any]) -> go.Figure | None:
    """1-D loss slices along filter-normalized directions (and the interpolation between two
    checkpoints when present), training loss against the step along the direction."""
    fig = go.Figure()
    for mid, label in (
        ("landscape.slice_1d", "slice"),
        ("landscape.interpolate", "interpolation"),
    ):
        m = measure(report, mid)
        if m is None:
            continue
        xs, lines = _line_series(m)
        for j, line in enumerate(lines):
            name = label if len(lines) == 1 else f"{label} {j + 1}"
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=line,
                    mode="lines",
                    name=name,
                    line={"color": run_color(len(fig.data)), "width": 2},
                    hovertemplate="α = %{x:.3g}: loss %{y:.4g}<extra></extra>",
                )
            )
    if not fig.data:
        return None
    _style(fig, "Loss landscape: 1-D slices", "step along direction α", "training loss")
    fig.add_vline(x=0, line={"color": MUTED, "dash": "dot", "width": 1})
    fig.update_layout(updatemenus=[_axis_menu(["yaxis"], x=1.0, label="y")], margin={"t": MENU_TOP})
    return fig


def _grid_2d(m: Mapping[str, Any]) -> tuple[list[Any], list[Any], list[list[Any]]] | None:
    coords = m.get("coordinates")
    xs = ys = None
    if isinstance(coords, Mapping):
        xs = _numbers(_first(coords, ("x", "alphas", "alpha")))
        ys = _numbers(_first(coords, ("y", "betas", "beta")))
    elif isinstance(coords, (list, tuple)) and len(coords) == 2:
        xs, ys = _numbers(coords[0]), _numbers(coords[1])
    if xs is None:
        xs = _numbers(_first(m, ("alphas", "x", "xs", "alpha")))
    if ys is None:
        ys = _numbers(_first(m, ("betas", "y", "ys", "beta")))
    z = _matrix(_first(m, ("loss", "losses", "loss_grid", "z", "values", "train_loss")))
    if not xs or not ys or not z:
        return None
    # the engine stores loss[i][j] at (alphas[i], betas[j]); plotly wants z[row = y][col = x]
    x_major = "alphas" in m and "betas" in m and not isinstance(coords, Mapping)
    if x_major and len(z) == len(xs) and all(len(r) == len(ys) for r in z):
        return xs, ys, [list(col) for col in zip(*z, strict=True)]
    if len(z) != len(ys) or any(len(r) != len(xs) for r in z):
        if len(z) == len(xs) and all(len(r) == len(ys) for r in z):
            z = [list(col) for col in zip(*z, strict=True)]  # stored as z[x][y]
        else:
            return None
    return xs, ys, z


def landscape_2d(report: Mapping[str, Any]) -> go.Figure | None:
    """2-D loss surface on the plane of two filter-normalized directions (contours)."""
    m = measure(report, "landscape.slice_2d")
    grid = _grid_2d(m) if m else None
    if grid is None:
        return None
    xs, ys, z = grid
    fig = go.Figure(
        go.Contour(
            x=xs,
            y=ys,
            z=z,
            colorscale="Viridis",
            contours={"coloring": "heatmap", "showlabels": True},
            colorbar={"title": {"text": "loss"}},
            hovertemplate="α %{x:.3g}, β %{y:.3g}: loss %{z:.4g}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0],
            y=[0],
            mode="markers",
            marker={"symbol": "x", "size": 10, "color": "white"},
            name="trained weights",
        )
    )
    _style(fig, "Loss landscape: 2-D slice", "α (direction 1)", "β (direction 2)", height=420)
    fig.update_layout(showlegend=False)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


# --------------------------------------------------------------------------- bounds


def bounds_of(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The bound measures that have a value."""
    return [
        (mid, m)
        for mid, m in sorted(measures_of(report).items())
        if mid.startswith("bound.") and num(m.get("value")) is not None
    ]


def bound_breakdown(report: Mapping[str, Any]) -> go.Figure | None:
    """Each bound on the test error (log scale; vacuous ones in red) against the measured
    test error and the trivial bound 1."""
    bounds = bounds_of(report)
    if not bounds:
        return None
    names = [esc(mid.removeprefix("bound.")) for mid, _ in bounds]
    values = [num(m["value"]) or 0.0 for _, m in bounds]
    verdicts = [bound_verdict(m) for _, m in bounds]
    colour = {"vacuous": BAD, "not informative": MUTED}
    fig = go.Figure(
        go.Bar(
            y=names,
            x=values,
            orientation="h",
            marker={"color": [colour.get(v, GOOD) for v in verdicts]},
            text=[
                f"{v:.3g}{f' ({verdict})' if verdict in colour else ''}"
                for v, verdict in zip(values, verdicts, strict=True)
            ],
            textposition="auto",
            name="bound",
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    test_error = metric(report, "test_error")
    if test_error is None:
        test_error = next(
            (num(m.get("test_error")) for _, m in bounds if num(m.get("test_error")) is not None),
            None,
        )
    if test_error is not None:
        fig.add_vline(
            x=max(test_error, 1e-6),
            line={"color": "#243447", "dash": "dash", "width": 2},
            annotation_text=f"measured test error {test_error:.3g}",
            annotation_position="top",
        )
    fig.add_vline(x=1, line={"color": MUTED, "dash": "dot", "width": 1})
    _style(fig, "Bounds on the test error", "bound (log scale)", None, legend=False)
    positive = [v for v in values if v > 0] + ([test_error] if test_error else []) + [1.0]
    lo, hi = min(positive), max(positive)
    fig.update_xaxes(type="log", range=[math.log10(lo) - 0.5, math.log10(hi) + 0.3])
    fig.update_layout(height=max(240, 80 + 44 * len(bounds)), margin={"l": 140})
    return fig


def _why(m: Mapping[str, Any]) -> str:
    """Why a measure has no value: its ``reason`` or its error's message."""
    err = mapping(m.get("error"))
    return str(m.get("reason") or err.get("message") or "")


def flatten_terms(terms: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten a bound's ``terms`` (possibly nested) into (name, value) rows."""
    rows: list[tuple[str, Any]] = []
    if isinstance(terms, Mapping):
        for k, v in terms.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                rows += flatten_terms(v, key + ".")
            elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
                for i, item in enumerate(v):
                    label = item.get("name", item.get("layer", i))
                    rows += flatten_terms(
                        {kk: vv for kk, vv in item.items() if kk not in ("name", "layer")},
                        f"{key}[{label}].",
                    )
            elif isinstance(v, (list, tuple)):
                rows.append(
                    (key, ", ".join(_fmt(x) for x in v[:12]) + (" …" if len(v) > 12 else ""))
                )
            else:
                rows.append((key, v))
    return rows


def _fmt(v: Any) -> str:
    f = num(v)
    return f"{f:.4g}" if f is not None else str(v)


# --------------------------------------------------------------------------- tables


def measure_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per measure: id, group, value, direction, seconds, status and why it failed
    or has no value."""
    rows = []
    for mid, m in sorted(measures_of(report).items()):
        err = m.get("error")
        reason = m.get("reason")
        if isinstance(err, Mapping):
            reason = err.get("message") or err.get("code") or reason
        rows.append(
            {
                "id": mid,
                "group": mid.split(".", 1)[0],
                "value": num(m.get("value")),
                "direction": m.get("direction"),
                "seconds": num(m.get("seconds")),
                "status": m.get("status", "ok"),
                "note": str(reason) if reason else "",
            }
        )
    return rows


def sharpness_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Sharpness measures with their value and parameters (ρ, steps…)."""
    rows = []
    for mid, m in sorted(measures_of(report).items()):
        if mid.startswith(("sharpness.", "smoothness.")):
            params = mapping(m.get("params"))
            rows.append(
                {
                    "id": mid,
                    "value": num(m.get("value")),
                    "direction": m.get("direction"),
                    "params": {str(k): v for k, v in params.items()},
                    "status": m.get("status", "ok"),
                }
            )
    return rows


def bound_verdict(m: Mapping[str, Any]) -> str:
    """What a bound's value says (the engine's ``vacuous`` and ``informative``, measures.md):
    ``vacuous`` (≥ 1), ``not informative`` (below 1 but not below the error of guessing),
    ``informative``; ``non-vacuous`` for a report from before ``informative`` was recorded."""
    value = num(m.get("value"))
    if bool(m.get("vacuous", value is not None and value >= 1)):
        return "vacuous"
    if "informative" not in m:
        return "non-vacuous"
    return "informative" if m["informative"] else "not informative"


def bound_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each bound with its value, its verdict (:func:`bound_verdict`), the rigorous flag and
    its flattened terms."""
    rows = []
    for mid, m in sorted(measures_of(report).items()):
        if not mid.startswith("bound."):
            continue
        value = num(m.get("value"))
        rows.append(
            {
                "id": mid,
                "value": value,
                "vacuous": bool(m.get("vacuous", value is not None and value >= 1)),
                "verdict": bound_verdict(m),
                "informative_below": num(m.get("informative_below")),
                "rigorous": m.get("rigorous"),
                "status": m.get("status", "ok"),
                "note": _why(m),
                "terms": [
                    [k, v if num(v) is None else num(v)] for k, v in flatten_terms(m.get("terms"))
                ],
            }
        )
    return rows


HEADLINE_MEASURES: tuple[tuple[str, str], ...] = (
    ("margin.all_layer", "median all-layer margin"),
    ("hessian.top_eigenvalues", "λ_max"),
    ("hessian.trace", "Hessian trace"),
    ("sharpness.adaptive_worst", "adaptive sharpness"),
)


def headline_scalars(report: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The scalars shown in the runs table: accuracies, gap, headline measures, each bound."""
    out: dict[str, float | None] = {}
    for key in ("train_accuracy", "test_accuracy", "generalization_gap"):
        out[key] = metric(report, key)
    for mid, _label in HEADLINE_MEASURES:
        m = measure(report, mid)
        out[mid] = num(m.get("value")) if m else None
    for mid, m in bounds_of(report or {}):
        out[mid] = num(m.get("value"))
    return out


def _better(a: float, b: float, direction: str | None) -> bool:
    return a > b if direction == "higher_is_better" else a < b


def scalar_table(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a side-by-side scalar table: metrics, then every measure with a value.

    Each row: ``key``, ``label``, ``direction``, ``values`` (one per run, ``None`` where
    missing) and ``best`` (the indices of the best runs by the row's direction; empty when the
    direction is unknown or fewer than two runs have a value).
    """
    reports = [r.get("report") for r in runs]
    rows: list[dict[str, Any]] = []
    for key, label, direction in METRIC_ROWS:
        values = [metric(rep, key) for rep in reports]
        if any(v is not None for v in values):
            rows.append({"key": key, "label": label, "direction": direction, "values": values})
    ids: list[str] = []
    directions: dict[str, str | None] = {}
    for rep in reports:
        for mid, m in measures_of(rep).items():
            if mid not in directions:
                ids.append(mid)
                directions[mid] = m.get("direction")
            elif directions[mid] is None:
                directions[mid] = m.get("direction")
    for mid in sorted(ids):
        values = []
        for rep in reports:
            entry = measure(rep, mid)
            values.append(num(entry.get("value")) if entry else None)
        if any(v is not None for v in values):
            rows.append({"key": mid, "label": mid, "direction": directions[mid], "values": values})
    for row in rows:
        present = [(i, v) for i, v in enumerate(row["values"]) if v is not None]
        best: list[int] = []
        if row["direction"] in ("higher_is_better", "lower_is_better") and len(present) > 1:
            top = present[0][1]
            for _i, v in present[1:]:
                if _better(v, top, row["direction"]):
                    top = v
            best = [i for i, v in present if v == top]
            if len(best) == len(present):
                best = []  # all equal: nothing to highlight
        row["best"] = best
    return rows


def gap_correlations(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Kendall τ-a of each measure with the generalization gap across the runs (Jiang et al.
    2020), for measures with a value in at least three runs that also have a gap."""
    reports = [r.get("report") for r in runs]
    gaps = [metric(rep, "generalization_gap") for rep in reports]
    out = []
    for row in scalar_table(runs):
        if row["key"] in {k for k, _, _ in METRIC_ROWS}:
            continue
        pairs = [
            (v, g)
            for v, g in zip(row["values"], gaps, strict=True)
            if v is not None and g is not None
        ]
        if len(pairs) < 3:
            continue
        tau = kendall_tau_a([p[0] for p in pairs], [p[1] for p in pairs])
        out.append({"key": row["key"], "direction": row["direction"], "tau": tau, "n": len(pairs)})
    return out


# --------------------------------------------------------------------------- comparisons


def run_label(run: Mapping[str, Any], index: int) -> str:
    """A run's display name (escaped later), falling back to its id or position."""
    for key in ("name", "label", "title"):
        if run.get(key):
            return str(run[key])
    if run.get("id") is not None:
        return f"run {run['id']}"
    return f"run {index + 1}"


def _margin_kinds(
    runs: Sequence[Mapping[str, Any]],
) -> list[tuple[str, list[np.ndarray]]]:
    """(label, per-run margin values) for each margin kind that some run has."""
    kinds = []
    for mid, label in MARGIN_KINDS:
        series = [margin_values(r.get("report"), mid) for r in runs]
        if any(len(s) for s in series):
            kinds.append((label, series))
    return kinds


def compare_margin_cdfs(runs: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Overlaid margin CDFs, one colour per run; a menu switches the margin kind."""
    kinds = _margin_kinds(runs)
    if not kinds:
        return None
    fig = go.Figure()
    counts = []
    for k, (_label, series) in enumerate(kinds):
        c = 0
        for i, (run, values) in enumerate(zip(runs, series, strict=True)):
            if not len(values):
                continue
            xs, fs = ecdf(values, _line_budget(len(runs)))
            fig.add_trace(_run_steps(run, i, xs, fs, "hv", k == 0, "%{x:.4g}: F = %{y:.3f}"))
            c += 1
        counts.append(c)
    _add_kind_menu(fig, kinds, counts, axis="xaxis.title.text")
    _style(fig, "Margin CDFs", kinds[0][0], "fraction of examples ≤ x", height=400)
    fig.update_yaxes(range=[0, 1.02])
    menus = [*list(fig.layout.updatemenus or []), _axis_menu(["xaxis"], x=1.0)]
    fig.update_layout(updatemenus=menus, margin={"t": MENU_TOP})
    return fig


def _run_steps(
    run: Mapping[str, Any], index: int, x: Any, y: Any, shape: str, visible: bool, hover: str
) -> go.Scatter:
    """One run's step line in its own colour and legend group (compare pages)."""
    return go.Scatter(
        x=f32(x),
        y=f32(y),
        mode="lines",
        name=esc(run_label(run, index)),
        legendgroup=f"run{index}",
        line={"shape": shape, "color": run_color(index), "width": 2},
        visible=visible,
        hovertemplate=hover + "<extra>%{fullData.name}</extra>",
    )


def _add_kind_menu(
    fig: go.Figure, kinds: Sequence[tuple[str, Any]], counts: Sequence[int], axis: str
) -> None:
    if len(kinds) < 2:
        return
    total = sum(counts)
    buttons = []
    start = 0
    for (label, _), c in zip(kinds, counts, strict=True):
        visible = [start <= j < start + c for j in range(total)]
        buttons.append(
            {"label": label, "method": "update", "args": [{"visible": visible}, {axis: label}]}
        )
        start += c
    fig.update_layout(updatemenus=[_menu(buttons, x=0.0)])


def compare_margin_densities(runs: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Overlaid margin densities (histograms on shared bins, drawn as steps), one colour per
    run; a menu switches the margin kind."""
    kinds = _margin_kinds(runs)
    if not kinds:
        return None
    fig = go.Figure()
    counts = []
    for k, (_label, series) in enumerate(kinds):
        edges = shared_edges(series, bins=HIST_BINS)
        c = 0
        for i, (run, values) in enumerate(zip(runs, series, strict=True)):
            if not len(values):
                continue
            centers, density, _ = histogram_density(values, edges=edges)
            fig.add_trace(_run_steps(run, i, centers, density, "hvh", k == 0, "%{x:.4g}: %{y:.3g}"))
            c += 1
        counts.append(c)
    _add_kind_menu(fig, kinds, counts, axis="xaxis.title.text")
    _style(fig, "Margin densities", kinds[0][0], "density", height=400)
    if len(kinds) > 1:
        fig.update_layout(margin={"t": MENU_TOP})
    return fig


def compare_spectral_density(runs: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Overlaid Hessian spectral densities (log density), one colour per run."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        curve = _density_curve(
            measure(run.get("report"), "hessian.density"), _line_budget(len(runs))
        )
        if curve is None:
            continue
        fig.add_trace(
            go.Scatter(
                **_density_trace_xy(curve),
                mode="lines",
                name=esc(run_label(run, i)),
                legendgroup=f"run{i}",
                line={"color": run_color(i), "width": 1.5},
            )
        )
    if not fig.data:
        return None
    _style(fig, "Hessian spectral densities", "eigenvalue λ", "density (log)", height=400)
    fig.update_yaxes(type="log", exponentformat="power")
    return fig


def compare_eigenvalues(runs: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Top Hessian eigenvalues by rank, one line per run."""
    fig = go.Figure()
    all_values: list[float | None] = []
    for i, run in enumerate(runs):
        m = measure(run.get("report"), "hessian.top_eigenvalues")
        values = _numbers(m.get("values")) if m else None
        if not values:
            continue
        all_values += values
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(values) + 1)),
                y=values,
                mode="lines+markers",
                name=esc(run_label(run, i)),
                legendgroup=f"run{i}",
                line={"color": run_color(i)},
                marker={"color": run_color(i)},
            )
        )
    if not fig.data:
        return None
    _style(fig, "Top Hessian eigenvalues", "rank", "eigenvalue")
    fig.update_xaxes(dtick=1)
    if _positive(all_values):
        fig.update_yaxes(type="log")
    return fig


def compare_bounds(runs: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Each bound per run (grouped bars, log scale), one colour per run."""
    ids = sorted({mid for r in runs for mid, _ in bounds_of(r.get("report") or {})})
    if not ids:
        return None
    fig = go.Figure()
    for i, run in enumerate(runs):
        values = []
        for mid in ids:
            m = measure(run.get("report"), mid)
            values.append(num(m.get("value")) if m else None)
        fig.add_trace(
            go.Bar(
                y=[esc(mid.removeprefix("bound.")) for mid in ids],
                x=values,
                orientation="h",
                name=esc(run_label(run, i)),
                legendgroup=f"run{i}",
                marker={"color": run_color(i)},
            )
        )
    fig.add_vline(x=1, line={"color": MUTED, "dash": "dot", "width": 1})
    _style(fig, "Bounds on the test error", "bound (log scale)", None)
    fig.update_xaxes(type="log")
    fig.update_layout(
        barmode="group", height=max(260, 100 + 26 * len(ids) * len(runs)), margin={"l": 140}
    )
    return fig


def gap_scatter(runs: Sequence[Mapping[str, Any]], max_panels: int = 24) -> go.Figure | None:
    """Each measure against the measured generalization gap, one panel per measure with its
    Kendall τ-a in the panel title (strongest first; measures equal in every run left out);
    one colour per run. Needs three runs or more."""
    if len(runs) < 3:
        return None
    rows_by_key = {row["key"]: row for row in scalar_table(runs)}
    # panels for measures that vary across the runs, the strongest rank correlations first
    corr = [
        c
        for c in gap_correlations(runs)
        if len({v for v in rows_by_key[c["key"]]["values"] if v is not None}) > 1
    ]
    corr.sort(key=lambda c: -abs(c["tau"] or 0.0))
    corr = corr[:max_panels]
    if not corr:
        return None
    gaps = [metric(r.get("report"), "generalization_gap") for r in runs]
    ncols = min(3, len(corr))
    nrows = math.ceil(len(corr) / ncols)
    titles = [
        f"{esc(c['key'])}<br>τ = {c['tau']:+.2f} (n={c['n']})"
        if c["tau"] is not None
        else esc(c["key"])
        for c in corr
    ]
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.12, 0.5 / max(1, nrows)),
    )
    names = [esc(run_label(run, i)) for i, run in enumerate(runs)]
    for p, c in enumerate(corr):
        row, col = p // ncols + 1, p % ncols + 1
        values = rows_by_key[c["key"]]["values"]
        keep = [i for i in range(len(runs)) if values[i] is not None and gaps[i] is not None]
        fig.add_trace(
            go.Scatter(
                x=[values[i] for i in keep],
                y=[gaps[i] for i in keep],
                mode="markers",
                text=[names[i] for i in keep],
                showlegend=False,
                marker={"color": [run_color(i) for i in keep], "size": 9},
                hovertemplate="%{text}<br>%{x:.4g}, gap %{y:.4g}<extra></extra>",
            ),
            row=row,
            col=col,
        )
    for i, name in enumerate(names):  # legend entries: one colour per run
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                marker={"color": run_color(i), "size": 9},
                showlegend=True,
            ),
            row=1,
            col=1,
        )
    _style(fig, "Measures vs generalization gap (Kendall τ-a)", None, None)
    fig.update_yaxes(title_text="gap", col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(
        height=150 + 260 * nrows,
        margin={"t": 96},
    )
    return fig


# --------------------------------------------------------------------------- assemblies

RunBuilder = Callable[[Mapping[str, Any]], "go.Figure | None"]
CompareBuilder = Callable[[Sequence[Mapping[str, Any]]], "go.Figure | None"]

#: (id, section, builder, description) of every run-page figure, in page order.
RUN_FIGURES: tuple[tuple[str, str, RunBuilder, str], ...] = (
    ("margin_distribution", "margins", margin_distribution, "Histogram and CDF per margin kind"),
    ("margin_per_class", "margins", margin_per_class, "Click a class in the legend to hide it"),
    ("margin_class_cdf", "margins", margin_class_cdf, "Per-class CDFs of the output margin"),
    ("margin_scatter", "margins", margin_scatter, "Each point is a training example"),
    ("layer_shares", "margins", layer_shares, "Where the all-layer perturbation concentrates"),
    ("hidden_margins", "margins", hidden_margins, "Jiang et al. 2019 signatures"),
    ("robust_accuracy", "margins", robust_accuracy, "Smallest flipping input perturbation"),
    ("hessian_eigenvalues", "curvature", hessian_eigenvalues, "Lanczos top eigenvalues"),
    ("hessian_density", "curvature", hessian_density, "SLQ spectral density, outliers marked"),
    ("layer_spectra", "curvature", layer_spectra, "Diagonal Hessian block per layer"),
    ("ntk_spectrum", "curvature", ntk_spectrum, "Empirical NTK on a sample"),
    ("sharpness_curves", "sharpness", sharpness_curves, "Sharpness over the radius ρ"),
    ("flatness_search", "sharpness", flatness_search, "Bisection on σ; dotted: σ found"),
    ("landscape_1d", "landscape", landscape_1d, "Filter-normalized 1-D slices"),
    ("landscape_2d", "landscape", landscape_2d, "Filter-normalized 2-D slice"),
    ("bound_breakdown", "bounds", bound_breakdown, "Bounds against the measured test error"),
    ("complexity_layers", "bounds", complexity_layers, "Norms entering the bounds"),
)

COMPARE_FIGURES: tuple[tuple[str, str, CompareBuilder, str], ...] = (
    ("compare_margin_cdfs", "margins", compare_margin_cdfs, "One colour per run"),
    ("compare_margin_densities", "margins", compare_margin_densities, "Shared bins per kind"),
    ("compare_spectral_density", "curvature", compare_spectral_density, "SLQ densities"),
    ("compare_eigenvalues", "curvature", compare_eigenvalues, "Lanczos top eigenvalues"),
    ("compare_bounds", "bounds", compare_bounds, "Vacuous beyond the dotted line at 1"),
    ("gap_scatter", "study", gap_scatter, "Kendall τ-a across the runs (ties count 0)"),
)


def _safe_build(builder: Callable[[Any], go.Figure | None], arg: Any) -> go.Figure | None:
    """Run one builder; a report shaped in a way the builder does not expect gives no figure
    rather than a broken page."""
    try:
        return builder(arg)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):
        return None


def run_figures(report: Mapping[str, Any] | None) -> list[FigureSpec]:
    """Every run-page figure the report has data for, in page order."""
    if not isinstance(report, Mapping):
        return []
    specs = []
    for fid, section, builder, description in RUN_FIGURES:
        fig = _safe_build(builder, report)
        if fig is not None:
            title = fig.layout.title.text or fid
            specs.append(FigureSpec(fid, html.unescape(title), section, fig, description))
    return specs


def compare_figures(runs: Sequence[Mapping[str, Any]]) -> list[FigureSpec]:
    """Every comparison figure for ``runs`` (dicts with ``name``/``id`` and ``report``)."""
    runs = list(runs)[:MAX_COMPARE_RUNS]
    specs = []
    for fid, section, builder, description in COMPARE_FIGURES:
        fig = _safe_build(builder, runs)
        if fig is not None:
            title = fig.layout.title.text or fid
            specs.append(FigureSpec(fid, html.unescape(title), section, fig, description))
    return specs


def run_payload(run: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the run page draws once a run has a report: figures and tables."""
    report = run.get("report") if isinstance(run.get("report"), Mapping) else None
    return {
        "figures": [s.to_payload() for s in run_figures(report)],
        "measures": measure_rows(report or {}),
        "sharpness": sharpness_rows(report or {}),
        "bounds": bound_rows(report or {}),
        "headline": headline_scalars(report),
    }


def compare_payload(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the compare and share pages draw: run names and colours, figures, the
    scalar table and the gap correlations. Beyond ``MAX_COMPARE_RUNS`` runs the rest are left
    out and ``omitted`` says how many."""
    omitted = max(0, len(runs) - MAX_COMPARE_RUNS)
    runs = list(runs)[:MAX_COMPARE_RUNS]
    return {
        "omitted": omitted,
        "runs": [
            {
                "id": r.get("id"),
                "name": run_label(r, i),
                "color": run_color(i),
                "status": r.get("status"),
                "model": _model_name(r.get("report")),
                "dataset": _dataset_name(r.get("report")),
                "checkpoint_id": r.get("checkpoint_id"),
                "dataset_spec": r.get("dataset"),
            }
            for i, r in enumerate(runs)
        ],
        "figures": [s.to_payload() for s in compare_figures(runs)],
        "table": scalar_table(runs),
        "correlations": gap_correlations(runs),
    }


def _model_name(report: Any) -> str | None:
    if not isinstance(report, Mapping) or not isinstance(report.get("model"), Mapping):
        return None
    model = report["model"]
    return str(model.get("arch") or model.get("format") or "") or None


def _dataset_name(report: Any) -> str | None:
    if not isinstance(report, Mapping) or not isinstance(report.get("data"), Mapping):
        return None
    name = report["data"].get("name")
    return str(name) if name is not None else None


def to_json(payload: Any) -> str:
    """Serialise a payload with plotly's encoder: numpy arrays as lists, NaN and infinities
    as null, and ``</`` escaped so the result is safe inside a ``<script>`` element."""
    return to_json_plotly(payload)
