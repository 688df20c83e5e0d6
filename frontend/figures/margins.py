"""Figures of the margin measures (``genscope/measures/margins.py``): distributions, per-class
breakdowns, all-layer against output margins, where the all-layer perturbation goes, hidden-
layer signatures and robust accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.figures.common import Report, measure, num, numbers
from frontend.figures.style import (
    ACCENT,
    BAD,
    HIST_BINS,
    MAX_CDF_POINTS,
    MAX_SCATTER_POINTS,
    MENU_TOP,
    MUTED,
    axis_menu,
    esc,
    f32,
    kind_menu,
    menu,
    run_color,
    style,
)
from frontend.stats import downsample_pairs, ecdf, finite_array, histogram_density

#: The margin measures with per-example ``values``: (measure id, label).
MARGIN_KINDS: tuple[tuple[str, str], ...] = (
    ("margin.output", "Output margin"),
    ("margin.all_layer", "All-layer margin"),
    ("margin.normalized", "Normalized margin"),
)


def margin_values(report: Report | None, mid: str) -> np.ndarray:
    """The finite per-example ``values`` of a margin measure (empty when not recorded)."""
    m = measure(report, mid)
    if m is None or m.get("values") is None:
        return np.zeros(0)
    return finite_array(numbers(m["values"]))


def margin_distribution(report: Report) -> go.Figure | None:
    """Histogram (density) and CDF of each margin kind of one run, one kind shown at a time
    (a menu switches output / all-layer / normalized), with a linear/log x toggle."""
    kinds = [(label, margin_values(report, mid)) for mid, label in MARGIN_KINDS]
    kinds = [k for k in kinds if len(k[1])]
    if not kinds:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    for i, (label, values) in enumerate(kinds):
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
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_yaxes(title_text="fraction of examples ≤ x", range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text=kinds[0][0], row=1, col=1)
    fig.update_xaxes(title_text=kinds[0][0], row=1, col=2)
    menus = []
    if len(kinds) > 1:
        buttons = []
        for i, (label, _values) in enumerate(kinds):
            visible = [j // 2 == i for j in range(2 * len(kinds))]
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
        menus.append(menu(buttons, x=0.0))
    menus.append(axis_menu(["xaxis", "xaxis2"], x=1.0 if len(kinds) > 1 else 0.0))
    style(fig, "Margin distribution", legend=False, height=380)
    fig.update_layout(updatemenus=menus, margin={"t": MENU_TOP})
    return fig


def _class_rows(report: Report, mid: str) -> list[dict[str, Any]]:
    """A margin measure's ``per_class`` rows of classes that have examples."""
    m = measure(report, mid)
    if m is None or m.get("per_class") is None:
        return []
    return [r for r in m["per_class"] if num(r["p50"]) is not None]


def margin_per_class(report: Report) -> go.Figure | None:
    """Per-class margin quantiles (p10, p25, p50, p75, p90) as boxes, one per class, so each
    class can be toggled from the legend; one menu entry per margin kind that has them."""
    kinds = [(label, rows) for mid, label in MARGIN_KINDS if (rows := _class_rows(report, mid))]
    if not kinds:
        return None
    fig = go.Figure()
    counts = []
    for i, (label, rows) in enumerate(kinds):
        separate = len(rows) <= 20
        groups = [[r] for r in rows] if separate else [rows]
        for group in groups:
            names = [esc(r["class"]) for r in group]
            fig.add_trace(
                go.Box(
                    x=[f"class {n}" for n in names],
                    q1=[num(r["p25"]) for r in group],
                    median=[num(r["p50"]) for r in group],
                    q3=[num(r["p75"]) for r in group],
                    lowerfence=[num(r["p10"]) for r in group],
                    upperfence=[num(r["p90"]) for r in group],
                    mean=[num(r["mean"]) for r in group],
                    name=f"class {names[0]}" if separate else label,
                    marker={"color": run_color(len(fig.data)) if separate else ACCENT},
                    visible=i == 0,
                    showlegend=separate,
                    hovertext=[f"{r['count']} examples" for r in group],
                )
            )
        counts.append(len(groups))
    switch = kind_menu([label for label, _ in kinds], counts, axis="yaxis.title.text")
    style(fig, "Margin per class (whiskers p10-p90, box p25-p75)", None, kinds[0][0])
    if switch is not None:
        fig.update_layout(updatemenus=[switch], margin={"t": MENU_TOP})
    fig.add_hline(y=0, line={"color": MUTED, "dash": "dot", "width": 1})
    return fig


def margin_class_cdf(report: Report) -> go.Figure | None:
    """Output-margin CDF per class, from the per-example ``values`` and their ``labels``.
    Every class is a legend entry (click to toggle; double-click to isolate).

    Raises:
        ValueError: ``values`` and ``labels`` differ in length (the schema pairs them).
    """
    m = measure(report, "margin.output")
    if m is None or m.get("values") is None or m.get("labels") is None:
        return None
    values, labels = numbers(m["values"]), list(m["labels"])
    if len(values) != len(labels):
        raise ValueError(f"margin.output: {len(values)} values but {len(labels)} labels")
    by_class: dict[Any, list[float]] = {}
    for v, y in zip(values, labels, strict=True):
        if v is not None:
            by_class.setdefault(y, []).append(v)
    if not by_class:
        return None
    fig = go.Figure()
    per_line = max(50, MAX_CDF_POINTS // len(by_class))
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
    return style(fig, "Output margin CDF per class", "Output margin", "fraction ≤ x")


def paired_margins(report: Report) -> tuple[np.ndarray, np.ndarray] | None:
    """Output and all-layer margins of the same examples: both measures ran on the whole
    training set (the same length); ``None`` when either is missing or they cover different
    examples."""
    out, al = measure(report, "margin.output"), measure(report, "margin.all_layer")
    if out is None or al is None or out.get("values") is None or al.get("values") is None:
        return None
    ov, av = numbers(out["values"]), numbers(al["values"])
    if len(ov) != len(av):
        return None
    pairs = [(a, b) for a, b in zip(ov, av, strict=True) if a is not None and b is not None]
    if not pairs:
        return None
    arr = np.asarray(pairs, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def margin_scatter(report: Report) -> go.Figure | None:
    """All-layer margin against output margin per training example (downsampled to at most
    ``MAX_SCATTER_POINTS``, extremes kept); misclassified examples in red."""
    pair = paired_margins(report)
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
    style(fig, "All-layer vs output margin (per example)", "Output margin", "All-layer margin")
    fig.update_layout(updatemenus=[axis_menu(["yaxis"], x=1.0, label="y")], margin={"t": MENU_TOP})
    return fig


def layer_shares(report: Report) -> go.Figure | None:
    """Where the all-layer perturbation concentrates: the mean share of ‖δ‖² per perturbation
    point (``loads``: ``point``, ``mean_share``; Wei & Ma 2020, eq. (2.1))."""
    m = measure(report, "margin.all_layer")
    if m is None or not m.get("loads"):
        return None
    loads = m["loads"]
    fig = go.Figure(
        go.Bar(
            x=[esc(load["point"]) for load in loads],
            y=[num(load["mean_share"]) for load in loads],
            marker={"color": ACCENT},
            hovertemplate="%{x}: %{y:.3g}<extra></extra>",
        )
    )
    return style(
        fig, "All-layer perturbation per layer", "perturbation point", "share", legend=False
    )


def hidden_margins(report: Report) -> go.Figure | None:
    """Jiang et al. 2019 margin signatures per layer: a box from Q1 to Q3 around the median,
    whiskers at the fences (Q1 − 1.5 IQR, Q3 + 1.5 IQR), normalized by the layer's spread."""
    m = measure(report, "margin.hidden")
    layers = m.get("layers") if m else None
    rows = [
        (str(item["point"]), item["signature"])
        for item in layers or []
        if item.get("signature") is not None and num(item["signature"]["q2"]) is not None
    ]
    if not rows:
        return None
    fig = go.Figure(
        go.Box(
            x=[esc(name) for name, _ in rows],
            q1=[num(sig["q1"]) for _, sig in rows],
            median=[num(sig["q2"]) for _, sig in rows],
            q3=[num(sig["q3"]) for _, sig in rows],
            lowerfence=[num(sig["lower_fence"]) for _, sig in rows],
            upperfence=[num(sig["upper_fence"]) for _, sig in rows],
            marker={"color": ACCENT},
            name="signature",
        )
    )
    style(fig, "Hidden-layer margin signatures", "layer (input first)", "normalized margin")
    fig.update_layout(showlegend=False)
    fig.add_hline(y=0, line={"color": MUTED, "dash": "dot", "width": 1})
    return fig


def robust_accuracy(report: Report) -> go.Figure | None:
    """Fraction of training examples whose smallest flipping input perturbation exceeds ε,
    for L2 and L∞ perturbations (``margin.robust``'s ``robust_accuracy``: eps, l2, linf)."""
    m = measure(report, "margin.robust")
    rows = [r for r in (m.get("robust_accuracy") or [] if m else []) if num(r["eps"]) is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: num(r["eps"]) or 0.0)
    fig = go.Figure()
    for i, (key, name) in enumerate((("l2", "L2"), ("linf", "L∞"))):
        ys = [num(r[key]) for r in rows]
        if any(v is not None for v in ys):
            fig.add_trace(
                go.Scatter(
                    x=[num(r["eps"]) for r in rows],
                    y=ys,
                    mode="lines+markers",
                    name=name,
                    line={"color": run_color(i)},
                    marker={"color": run_color(i)},
                )
            )
    if not fig.data:
        return None
    style(fig, "Robust training accuracy vs ε", "perturbation radius ε", "robust accuracy")
    fig.update_yaxes(range=[0, 1.02])
    return fig
