"""Figures of a comparison: several runs overlaid, one colour per run (margin CDFs and
densities, spectral densities, top eigenvalues, bounds), and each measure against the
generalization gap across the runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.figures.bounds import bounds_of
from frontend.figures.common import measure, measures_of, metric, missing_reason, num
from frontend.figures.curvature import density_curve, top_eigenvalues
from frontend.figures.margins import MARGIN_KINDS, margin_values
from frontend.figures.style import (
    BAD,
    HIST_BINS,
    MENU_TOP,
    MUTED,
    all_positive,
    axis_menu,
    esc,
    f32,
    kind_menu,
    line_budget,
    log_axis,
    run_color,
    style,
    trace_values,
)
from frontend.figures.tables import gap_correlations, scalar_table
from frontend.stats import ecdf, histogram_density, shared_edges

Runs = Sequence[Mapping[str, Any]]


def run_label(run: Mapping[str, Any], index: int) -> str:
    """A run's display name (escaped later), falling back to its id or position."""
    for key in ("name", "label", "title"):
        if run.get(key):
            return str(run[key])
    if run.get("id") is not None:
        return f"run {run['id']}"
    return f"run {index + 1}"


def _margin_kinds(runs: Runs) -> list[tuple[str, list[np.ndarray]]]:
    """(label, per-run margin values) for each margin kind that some run has."""
    kinds = []
    for mid, label in MARGIN_KINDS:
        series = [margin_values(r.get("report"), mid) for r in runs]
        if any(len(s) for s in series):
            kinds.append((label, series))
    return kinds


def _run_steps(
    run: Mapping[str, Any], index: int, x: Any, y: Any, shape: str, visible: bool, hover: str
) -> go.Scatter:
    """One run's step line in its own colour and legend group."""
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


def compare_margin_cdfs(runs: Runs) -> go.Figure | None:
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
            xs, fs = ecdf(values, line_budget(len(runs)))
            fig.add_trace(_run_steps(run, i, xs, fs, "hv", k == 0, "%{x:.4g}: F = %{y:.3f}"))
            c += 1
        counts.append(c)
    switch = kind_menu([label for label, _ in kinds], counts, axis="xaxis.title.text")
    style(fig, "Margin CDFs", kinds[0][0], "fraction of examples ≤ x", height=400)
    fig.update_yaxes(range=[0, 1.02])
    menus = [*([switch] if switch else []), axis_menu(["xaxis"], x=1.0)]
    fig.update_layout(updatemenus=menus, margin={"t": MENU_TOP})
    return fig


def compare_margin_densities(runs: Runs) -> go.Figure | None:
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
    switch = kind_menu([label for label, _ in kinds], counts, axis="xaxis.title.text")
    style(fig, "Margin densities", kinds[0][0], "density", height=400)
    if switch is not None:
        fig.update_layout(updatemenus=[switch], margin={"t": MENU_TOP})
    return fig


def compare_spectral_density(runs: Runs) -> go.Figure | None:
    """Overlaid Hessian spectral densities (log density), one colour per run."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        curve = density_curve(measure(run.get("report"), "hessian.density"), line_budget(len(runs)))
        if curve is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=f32(curve[0]),
                y=f32(curve[1]),
                mode="lines",
                name=esc(run_label(run, i)),
                legendgroup=f"run{i}",
                line={"color": run_color(i), "width": 1.5},
            )
        )
    if not fig.data:
        return None
    style(fig, "Hessian spectral densities", "eigenvalue λ", "density (log)", height=400)
    fig.update_yaxes(**log_axis(trace_values(fig, "y")))
    return fig


def compare_eigenvalues(runs: Runs) -> go.Figure | None:
    """Top Hessian eigenvalues by rank, one line per run."""
    fig = go.Figure()
    all_values: list[float | None] = []
    for i, run in enumerate(runs):
        values = top_eigenvalues(measure(run.get("report"), "hessian.top_eigenvalues"))
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
    style(fig, "Top Hessian eigenvalues", "rank", "eigenvalue")
    fig.update_xaxes(dtick=1)
    if all_positive(all_values):
        fig.update_yaxes(**log_axis(all_values))
    return fig


def compare_bounds(runs: Runs) -> go.Figure | None:
    """Each bound per run (grouped bars, log scale), one colour per run. A run without a
    value for a bound keeps its place: a short hatched bar marked "no value", the reason
    (not computed, skipped, failed, not finite) on hover."""
    ids = sorted({mid for r in runs for mid, _ in bounds_of(r.get("report") or {})})
    if not ids:
        return None
    labels = [esc(mid.removeprefix("bound.")) for mid in ids]
    table = []
    for run in runs:
        values = []
        for mid in ids:
            m = measure(run.get("report"), mid)
            values.append(num(m.get("value")) if m else None)
        table.append(values)
    shown = [v for values in table for v in values if v is not None and v > 0]
    lo, hi = min([*shown, 1.0]), max([*shown, 1.0])
    stub = 10 ** (math.log10(lo) - 0.25)  # the "no value" bar: short, left of every value
    fig = go.Figure()
    for i, (run, values) in enumerate(zip(runs, table, strict=True)):
        name = esc(run_label(run, i))
        fig.add_trace(
            go.Bar(
                y=labels,
                x=values,
                orientation="h",
                name=name,
                legendgroup=f"run{i}",
                offsetgroup=f"run{i}",
                marker={"color": run_color(i)},
                hovertemplate="%{y}: %{x:.4g}<extra>%{fullData.name}</extra>",
            )
        )
        missing = [k for k, v in enumerate(values) if v is None]
        if missing:
            entries = measures_of(run.get("report"))
            fig.add_trace(
                go.Bar(
                    y=[labels[k] for k in missing],
                    x=[stub] * len(missing),
                    orientation="h",
                    name=f"{name}: no value",
                    legendgroup=f"run{i}",
                    offsetgroup=f"run{i}",
                    showlegend=False,
                    marker={
                        "color": "white",
                        "line": {"color": run_color(i), "width": 1},
                        "pattern": {"shape": "/", "fgcolor": run_color(i), "size": 6},
                    },
                    text=["no value"] * len(missing),
                    textposition="outside",
                    textfont={"color": MUTED, "size": 10},
                    hovertext=[esc(missing_reason(entries.get(ids[k]))) for k in missing],
                    hovertemplate="%{y}: no value<br>%{hovertext}<extra>" + name + "</extra>",
                )
            )
    fig.add_vline(x=1, line={"color": MUTED, "dash": "dot", "width": 1})
    style(fig, "Bounds on the test error", "bound (log scale)", None)
    fig.update_xaxes(**log_axis([lo, hi]), range=[math.log10(lo) - 0.5, math.log10(hi) + 0.4])
    fig.update_layout(
        barmode="group", height=max(260, 100 + 26 * len(ids) * len(runs)), margin={"l": 140}
    )
    return fig


def gap_scatter(runs: Runs, max_panels: int = 24) -> go.Figure | None:
    """Each measure against the measured generalization gap, one panel per measure with its
    Kendall τ-a, its bootstrap interval and the run count in the panel title (strongest
    first; measures equal in every run left out), the notes of :func:`gap_correlations` (too
    few runs, runs of different architectures or datasets) under the title; one colour per
    run. Needs three runs or more."""
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
    titles = [f"{esc(c['key'])}<br>{esc(c['label'])}" for c in corr]
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.12, 0.5 / max(1, nrows)),
    )
    names = [esc(run_label(run, i)) for i, run in enumerate(runs)]
    for p, c in enumerate(corr):
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
            row=p // ncols + 1,
            col=p % ncols + 1,
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
    style(fig, "Measures vs generalization gap (Kendall τ-a)", None, None)
    notes = list(dict.fromkeys(note for c in corr for note in c["notes"]))
    if notes:
        fig.update_layout(
            title_subtitle={"text": esc("; ".join(notes)), "font": {"size": 11, "color": BAD}}
        )
    fig.update_yaxes(title_text="gap", col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=150 + 260 * nrows, margin={"t": 96})
    return fig
