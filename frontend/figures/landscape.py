"""Figures of the loss-landscape measures (``genscope/measures/landscape.py``): 1-D slices and
the interpolation between two checkpoints, and the 2-D slice."""

from __future__ import annotations

import plotly.graph_objects as go

from frontend.figures.common import Report, measure, numbers
from frontend.figures.style import MENU_TOP, MUTED, axis_menu, run_color, style

#: Loss curves of one run: (measure id, detail holding the abscissa, legend label).
LINES: tuple[tuple[str, str, str], ...] = (
    ("landscape.slice_1d", "alphas", "slice"),
    ("landscape.interpolate", "t", "interpolation"),
)


def loss_line(report: Report, mid: str, coordinate: str) -> tuple[list, list] | None:
    """A measure's abscissa (``coordinate``) and its ``loss`` at each point.

    Raises:
        ValueError: the two differ in length.
    """
    m = measure(report, mid)
    if m is None or m.get(coordinate) is None or m.get("loss") is None:
        return None
    xs, loss = numbers(m[coordinate]), numbers(m["loss"])
    if len(xs) != len(loss):
        raise ValueError(f"{mid}: {len(xs)} points but {len(loss)} losses")
    return xs, loss


def landscape_1d(report: Report) -> go.Figure | None:
    """Training loss along a filter-normalized direction (Li et al. 2018, §4) and along the
    segment to a second checkpoint (Goodfellow et al. 2015), against the step α or t."""
    fig = go.Figure()
    for mid, coordinate, label in LINES:
        line = loss_line(report, mid, coordinate)
        if line is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=line[0],
                y=line[1],
                mode="lines",
                name=label,
                line={"color": run_color(len(fig.data)), "width": 2},
                hovertemplate="α = %{x:.3g}: loss %{y:.4g}<extra></extra>",
            )
        )
    if not fig.data:
        return None
    style(fig, "Loss landscape: 1-D slices", "step along direction α", "training loss")
    fig.add_vline(x=0, line={"color": MUTED, "dash": "dot", "width": 1})
    fig.update_layout(updatemenus=[axis_menu(["yaxis"], x=1.0, label="y")], margin={"t": MENU_TOP})
    return fig


def loss_plane(report: Report) -> tuple[list, list, list[list]] | None:
    """``landscape.slice_2d`` as plotly wants it: x = ``alphas``, y = ``betas`` and
    z[row = β][column = α] (the engine stores ``loss[i][j]`` at (alphas[i], betas[j])).

    Raises:
        ValueError: ``loss`` is not len(alphas) rows of len(betas).
    """
    m = measure(report, "landscape.slice_2d")
    if m is None or m.get("loss") is None:
        return None
    xs, ys = numbers(m["alphas"]), numbers(m["betas"])
    rows = [numbers(row) for row in m["loss"]]
    if len(rows) != len(xs) or any(len(r) != len(ys) for r in rows):
        raise ValueError(f"landscape.slice_2d: loss is not {len(xs)} rows of {len(ys)}")
    return xs, ys, [list(col) for col in zip(*rows, strict=True)]


def landscape_2d(report: Report) -> go.Figure | None:
    """2-D loss surface on the plane of two filter-normalized directions (Li et al. 2018, §4),
    as contours, the trained weights at the origin."""
    plane = loss_plane(report)
    if plane is None:
        return None
    xs, ys, z = plane
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
    style(fig, "Loss landscape: 2-D slice", "α (direction 1)", "β (direction 2)", height=420)
    fig.update_layout(showlegend=False)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig
