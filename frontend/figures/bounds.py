"""Figures of the generalization bounds (``genscope/measures/bounds.py``) and of the per-layer
norms behind them (``genscope/measures/complexity.py``), with the verdict on each bound."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from frontend.figures.common import Report, measure, measures_of, metric, missing_reason, num
from frontend.figures.style import BAD, GOOD, MUTED, esc, log_axis, run_color, style

#: The complexity measures whose ``layers`` carry each affine map's norms.
NORM_MEASURES = ("complexity.spectral", "complexity.frobenius")


def bounds_of(report: Report) -> list[tuple[str, dict[str, Any]]]:
    """The bound measures that have a value, by id."""
    return [
        (mid, m)
        for mid, m in sorted(measures_of(report).items())
        if mid.startswith("bound.") and num(m.get("value")) is not None
    ]


def is_vacuous(m: dict[str, Any]) -> bool:
    """The engine's ``vacuous`` flag (a bound ≥ 1 says nothing about an error in [0, 1])."""
    value = num(m.get("value"))
    # reports from before the flag was recorded: the same rule, from the value
    return bool(m.get("vacuous", value is not None and value >= 1))


def bound_verdict(m: dict[str, Any]) -> str:
    """What a bound's value says (the engine's ``vacuous`` and ``informative``, measures.md):
    ``vacuous`` (≥ 1), ``not informative`` (below 1 but not below the error of guessing),
    ``informative``; ``non-vacuous`` for a report from before ``informative`` was recorded."""
    if is_vacuous(m):
        return "vacuous"
    if "informative" not in m:  # stored reports from before the flag: no claim either way
        return "non-vacuous"
    return "informative" if m["informative"] else "not informative"


def bound_breakdown(report: Report) -> go.Figure | None:
    """Each bound on the test error (log scale; vacuous ones in red, not informative ones
    grey) against the measured test error and the trivial bound 1; a bound without a value
    keeps its row, a hatched "no value" bar with the reason on hover."""
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
    _no_value_bars(fig, report, min(v for v in values if v > 0) if any(values) else 1.0)
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
    style(fig, "Bounds on the test error", "bound (log scale)", None, legend=False)
    positive = [v for v in values if v > 0] + ([test_error] if test_error else []) + [1.0]
    lo, hi = min(positive), max(positive)
    fig.update_xaxes(**log_axis(positive), range=[math.log10(lo) - 0.5, math.log10(hi) + 0.3])
    rows = len({*names, *(t for trace in fig.data for t in trace.y)})
    fig.update_layout(height=max(240, 80 + 44 * rows), margin={"l": 140}, barmode="overlay")
    return fig


#: What each per-layer norm is, for a linear layer and for a convolution (genscope.norms).
NORM_OBJECTS: dict[str, tuple[str, str, str]] = {
    # key: (legend label, linear layer, convolution)
    "spectral": (
        "‖·‖₂ operator norm",
        "operator norm (largest singular value) of the weight matrix",
        "operator norm of the convolution at its input shape (padding, stride included)",
    ),
    "frobenius": (
        "‖·‖_F Frobenius norm",
        "Frobenius norm of the weight matrix",
        "Frobenius norm of the kernel",
    ),
}

#: The one-line note under the per-layer norms figure when a layer is a convolution.
CONV_NORM_NOTE = (
    "A convolution's operator norm can exceed its kernel's Frobenius norm: they are norms of "
    "different objects; ‖conv‖₂ ≤ √(k·k′)·‖K‖_F for a k×k′ kernel (Sedghi et al. 2019, "
    '"The Singular Values of Convolutional Layers", Thm. 6, with Cauchy–Schwarz over the taps)'
)
#: The same, short enough for the figure's subtitle (two lines).
CONV_NORM_SUBTITLE = (
    "conv: operator norm of the convolution at its input shape; Frobenius norm of the kernel",
    "different objects: ‖conv‖₂ ≤ √(k·k′)·‖K‖_F, may exceed ‖K‖_F (Sedghi et al. 2019, Thm. 6)",
)
#: The note when every layer is linear: the two norms of one matrix.
LINEAR_NORM_NOTE = "Both norms are of the same weight matrix: ‖W‖₂ ≤ ‖W‖_F ≤ √rank·‖W‖₂"


def _no_value_bars(fig: go.Figure, report: Report, lo: float) -> None:
    """The bounds the run has an entry for but no value (skipped, failed, a condition of the
    theorem not met): a short hatched bar each, marked "no value", the reason on hover."""
    missing = [
        (mid, m)
        for mid, m in sorted(measures_of(report).items())
        if mid.startswith("bound.") and num(m.get("value")) is None
    ]
    if not missing:
        return
    fig.add_trace(
        go.Bar(
            y=[esc(mid.removeprefix("bound.")) for mid, _ in missing],
            x=[10 ** (math.log10(min(lo, 1.0)) - 0.25)] * len(missing),
            orientation="h",
            name="no value",
            marker={
                "color": "white",
                "line": {"color": MUTED, "width": 1},
                "pattern": {"shape": "/", "fgcolor": MUTED, "size": 6},
            },
            text=["no value"] * len(missing),
            textposition="outside",
            textfont={"color": MUTED, "size": 10},
            hovertext=[esc(missing_reason(m)) for _, m in missing],
            hovertemplate="%{y}: no value<br>%{hovertext}<extra></extra>",
        )
    )


def complexity_layers(report: Report) -> go.Figure | None:
    """Per-layer norms behind the norm-based complexity measures and bounds: the operator
    norm and the Frobenius norm of each affine map, BatchNorm folded (``layers``: name, kind,
    spectral, frobenius), each bar saying which object its norm is of (:data:`NORM_OBJECTS`):
    for a convolution, the operator at its input shape and the kernel, which is why the first
    can exceed the second (:data:`CONV_NORM_NOTE`)."""
    rows: dict[str, dict[str, Any]] = {}
    for mid in NORM_MEASURES:
        m = measure(report, mid)
        for item in (m.get("layers") or []) if m else []:
            row = rows.setdefault(str(item["name"]), {"kind": str(item.get("kind") or "")})
            for key in ("spectral", "frobenius"):
                if num(item[key]) is not None:
                    row[key] = num(item[key])
    if not rows:
        return None
    names = list(rows)
    conv = [rows[n]["kind"].startswith("conv") for n in names]
    fig = go.Figure()
    for i, (key, (label, linear_obj, conv_obj)) in enumerate(NORM_OBJECTS.items()):
        ys = [rows[n].get(key) for n in names]
        if any(v is not None for v in ys):
            fig.add_trace(
                go.Bar(
                    x=[esc(n) for n in names],
                    y=ys,
                    name=label,
                    marker={"color": run_color(i)},
                    hovertext=[
                        esc(f"{rows[n]['kind'] or 'layer'}: {conv_obj if c else linear_obj}")
                        for n, c in zip(names, conv, strict=True)
                    ],
                    hovertemplate="%{x}: %{y:.4g}<br>%{hovertext}<extra></extra>",
                )
            )
    if not fig.data:
        return None
    style(fig, "Per-layer norms", "layer", "norm")
    lines = CONV_NORM_SUBTITLE if any(conv) else (LINEAR_NORM_NOTE,)
    fig.update_layout(
        barmode="group",
        title_subtitle={
            "text": "<br>".join(esc(line) for line in lines),
            "font": {"size": 10, "color": MUTED},
        },
        margin={"t": 48 + 14 * len(lines)},
    )
    return fig
