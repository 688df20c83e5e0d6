"""Figures of the sharpness measures (``genscope/measures/sharpness.py``): sharpness over the
radius ρ, and the PAC-Bayes flatness searches over the noise scale σ."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from frontend.figures.common import Report, measure, num, numbers
from frontend.figures.style import MUTED, all_positive, esc, log_axis, run_color, style

#: The sharpness measures defined by a radius, which record their ρ sweep (``rho_curve``).
RADIUS_MEASURES = (
    "sharpness.adaptive_average",
    "sharpness.adaptive_worst",
    "sharpness.keskar",
    "sharpness.sam",
)
#: The flatness searches: (measure id, legend label, detail holding the σ found).
FLATNESS_SEARCHES: tuple[tuple[str, str, str], ...] = (
    ("sharpness.pacbayes_flatness", "N(0, σ²I)", "sigma"),
    ("sharpness.pacbayes_mag_flatness", "magnitude-aware σ'", "sigma_prime"),
)


def rho_curve(m: dict[str, Any]) -> list[tuple[float, float, float | None]]:
    """A radius measure's ``rho_curve`` as sorted (ρ, value, stderr) points with a finite
    value (``rho`` holds ε for ``sharpness.keskar``); empty when not recorded.

    Raises:
        ValueError: ``rho``, ``value`` and ``stderr`` differ in length.
    """
    curve = m.get("rho_curve")
    if curve is None:
        return []
    rhos, values = numbers(curve["rho"]), numbers(curve["value"])
    errs = numbers(curve["stderr"]) if curve.get("stderr") is not None else [None] * len(rhos)
    if not len(rhos) == len(values) == len(errs):
        raise ValueError(
            f"rho_curve: {len(rhos)} radii, {len(values)} values and {len(errs)} stderrs"
        )
    points = zip(rhos, values, errs, strict=True)
    kept = [(r, v, e) for r, v, e in points if r is not None and v is not None]
    return sorted(kept, key=lambda p: p[0])


def sharpness_curves(report: Report) -> go.Figure | None:
    """Sharpness against the perturbation radius ρ, one line per sharpness measure that
    recorded a ρ sweep, ± one standard error (log-log when all positive)."""
    fig = go.Figure()
    xs_all: list[float | None] = []
    ys_all: list[float | None] = []
    for mid in RADIUS_MEASURES:
        m = measure(report, mid)
        points = rho_curve(m) if m is not None else []
        if not points:
            continue
        color = run_color(len(fig.data))
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                error_y={"type": "data", "array": [p[2] or 0.0 for p in points], "visible": True},
                mode="lines+markers",
                name=esc(mid),
                marker={"color": color},
                line={"color": color},
                hovertemplate="ρ = %{x:.4g}: %{y:.4g}<extra>%{fullData.name}</extra>",
            )
        )
        xs_all += [p[0] for p in points]
        ys_all += [p[1] for p in points]
    if not fig.data:
        return None
    style(fig, "Sharpness vs radius ρ", "ρ", "sharpness")
    if all_positive(xs_all):
        fig.update_xaxes(**log_axis(xs_all))
    if all_positive(ys_all):
        fig.update_yaxes(**log_axis(ys_all))
    return fig


def flatness_search(report: Report) -> go.Figure | None:
    """The PAC-Bayes flatness searches (Jiang et al. 2020, §C.3): training accuracy under
    weight noise against the noise scale σ (``evaluations``: sigma, accuracy, stderr), with the
    σ found and the accuracy it was searched for (clean accuracy − 0.1)."""
    fig = go.Figure()
    for mid, label, key in FLATNESS_SEARCHES:
        m = measure(report, mid)
        evaluations = (m.get("evaluations") or []) if m else []
        pts = sorted(
            [
                (num(e["sigma"]), num(e["accuracy"]), num(e["stderr"]))
                for e in evaluations
                if num(e["sigma"]) is not None and num(e["accuracy"]) is not None
            ],
            key=lambda p: p[0] or 0.0,
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
    style(fig, "PAC-Bayes flatness search", "noise scale σ", "training accuracy under noise")
    return fig
