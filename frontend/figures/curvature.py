"""Figures of the curvature measures (``genscope/measures/curvature.py``): top eigenvalues of
the Hessian and GGN, spectral densities, per-layer Hessian blocks, and the empirical NTK
spectrum."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from frontend.figures.common import Report, measure, num, numbers
from frontend.figures.style import (
    ACCENT,
    MAX_CURVE_POINTS,
    all_positive,
    esc,
    f32,
    log_axis,
    run_color,
    style,
    trace_values,
)
from frontend.stats import downsample_indices

#: Curvature operators with Lanczos eigenvalues and SLQ densities: (prefix, label).
OPERATORS: tuple[tuple[str, str], ...] = (("hessian", "Hessian"), ("ggn", "GGN"))


def top_eigenvalues(m: dict[str, Any] | None) -> list[float | None]:
    """A Lanczos measure's ``values`` (largest first), empty when not recorded."""
    return [] if m is None or m.get("values") is None else numbers(m["values"])


def hessian_eigenvalues(report: Report) -> go.Figure | None:
    """Top Hessian (and GGN, when present) eigenvalues by rank, residuals in the hover; log
    y when all are positive; λ_min annotated when ``hessian.min_eigenvalue`` ran."""
    fig = go.Figure()
    all_values: list[float | None] = []
    for i, (prefix, label) in enumerate(OPERATORS):
        m = measure(report, f"{prefix}.top_eigenvalues")
        values = top_eigenvalues(m)
        if m is None or not values:
            continue
        residuals = numbers(m["residuals"]) if m.get("residuals") is not None else []
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
    style(fig, "Top eigenvalues", "rank", "eigenvalue")
    fig.update_xaxes(dtick=1)
    if all_positive(all_values):
        fig.update_yaxes(**log_axis(all_values))
    low_m = measure(report, "hessian.min_eigenvalue")
    low = num(low_m.get("value")) if low_m else None
    if low is not None:
        fig.add_annotation(
            text=f"λ_min = {low:.3g}", xref="paper", yref="paper", x=1, y=1, showarrow=False
        )
    return fig


def density_curve(
    m: dict[str, Any] | None, max_points: int = MAX_CURVE_POINTS
) -> tuple[list[float], list[float]] | None:
    """An SLQ density's ``grid`` and ``density``, downsampled (the peak kept) and floored at
    10⁻¹² of the peak so that a log axis shows it.

    Raises:
        ValueError: ``grid`` and ``density`` differ in length.
    """
    if m is None or m.get("grid") is None or m.get("density") is None:
        return None
    grid, dens = numbers(m["grid"]), numbers(m["density"])
    if len(grid) != len(dens):
        raise ValueError(f"density: {len(grid)} grid points but {len(dens)} densities")
    pts = [(g, d) for g, d in zip(grid, dens, strict=True) if g is not None and d is not None]
    if not pts:
        return None
    idx = downsample_indices(len(pts), max_points, keep=[int(np.argmax([p[1] for p in pts]))])
    pts = [pts[int(i)] for i in idx]
    peak = max(d for _, d in pts)
    floor = peak * 1e-12 if peak > 0 else 1e-300
    return [g for g, _ in pts], [max(d, floor) for _, d in pts]


def outliers(m: dict[str, Any]) -> list[float]:
    """The outlying eigenvalues an SLQ density found (``outliers.values``)."""
    block = m.get("outliers")
    if block is None or block.get("values") is None:
        return []
    return [v for v in numbers(block["values"]) if v is not None]


def hessian_density(report: Report) -> go.Figure | None:
    """Spectral density (SLQ, Gaussian-smoothed; Ghorbani et al. 2019) on a log density axis,
    outliers marked."""
    fig = go.Figure()
    peak = 0.0
    for i, (prefix, label) in enumerate(OPERATORS):
        m = measure(report, f"{prefix}.density")
        curve = density_curve(m)
        if curve is None or m is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=f32(curve[0]),
                y=f32(curve[1]),
                mode="lines",
                name=f"{label} density",
                line={"color": run_color(i), "width": 1.5},
                hovertemplate="λ = %{x:.4g}: %{y:.3g}<extra></extra>",
            )
        )
        peak = max(peak, max(curve[1]))
        outs = outliers(m)
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
    style(fig, "Spectral density", "eigenvalue λ", "density (log)")
    fig.update_yaxes(**log_axis(trace_values(fig, "y")))
    return fig


def layer_spectra(report: Report) -> go.Figure | None:
    """Top eigenvalue and trace of each layer's diagonal Hessian block (grouped bars;
    ``layers``: layer, top_eigenvalue, trace)."""
    m = measure(report, "hessian.layer_spectra")
    if m is None or not m.get("layers"):
        return None
    rows = m["layers"]
    names = [esc(r["layer"]) for r in rows]
    fig = go.Figure()
    series: list[float | None] = []
    for i, (key, label) in enumerate((("top_eigenvalue", "λ_max"), ("trace", "trace"))):
        ys = [num(r[key]) for r in rows]
        series += ys
        if any(v is not None for v in ys):
            fig.add_trace(go.Bar(x=names, y=ys, name=label, marker={"color": run_color(i)}))
    if not fig.data:
        return None
    style(fig, "Per-layer Hessian blocks", "layer", "value")
    fig.update_layout(barmode="group")
    if all_positive(series):
        fig.update_yaxes(**log_axis(series))
    return fig


def ntk_spectrum(report: Report) -> go.Figure | None:
    """Eigenvalues of the empirical neural tangent kernel on a sample (Jacot et al. 2018), by
    rank (log scale when all positive)."""
    m = measure(report, "ntk.spectrum")
    if m is None or m.get("eigenvalues") is None:
        return None
    values = sorted((v for v in numbers(m["eigenvalues"]) if v is not None), reverse=True)
    if not values:
        return None
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
    style(fig, "Empirical NTK spectrum", "rank", "eigenvalue", legend=False)
    if all_positive(values):
        fig.update_yaxes(**log_axis(values))
    return fig
