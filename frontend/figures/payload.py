"""What the run, compare and share pages receive: every figure a report has data for, in page
order, with the tables, serialised with plotly's encoder.

A figure is drawn when the report has its measure and the detail it plots; a report without
them gives no figure. A builder given details that depart from their declared shape raises (a
bug of the engine or of a stored report, which the tests catch); the page assembly does not hide
it, and does not fail the whole page for it either: the figure's card says it could not be drawn
and why (:func:`_failed_spec`), the error is logged with its traceback, and the other figures and
tables are served.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.io.json import to_json_plotly

from frontend.figures.bounds import bound_breakdown, complexity_layers
from frontend.figures.common import Report, mapping
from frontend.figures.compare import (
    compare_bounds,
    compare_eigenvalues,
    compare_margin_cdfs,
    compare_margin_densities,
    compare_spectral_density,
    gap_scatter,
    run_label,
)
from frontend.figures.curvature import (
    hessian_density,
    hessian_eigenvalues,
    layer_spectra,
    ntk_spectrum,
)
from frontend.figures.help import figure_help
from frontend.figures.landscape import landscape_1d, landscape_2d
from frontend.figures.margins import (
    hidden_margins,
    layer_shares,
    margin_class_cdf,
    margin_distribution,
    margin_per_class,
    margin_scatter,
    robust_accuracy,
)
from frontend.figures.sharpness import flatness_search, sharpness_curves
from frontend.figures.style import run_color
from frontend.figures.tables import (
    bound_rows,
    gap_correlations,
    headline_scalars,
    measure_rows,
    scalar_table,
    sharpness_rows,
)

log = logging.getLogger("genscope.dashboard")

#: A comparison shows at most this many runs.
MAX_COMPARE_RUNS = 20

RunBuilder = Callable[[Report], "go.Figure | None"]
CompareBuilder = Callable[[Sequence[Mapping[str, Any]]], "go.Figure | None"]


@dataclass
class FigureSpec:
    """A figure with the page section it belongs to and a short description."""

    id: str
    title: str
    section: str
    figure: go.Figure
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    help: dict[str, str] | None = None

    def to_payload(self) -> dict[str, Any]:
        """A JSON-ready dict; the figure as plotly's own JSON structure."""
        return {
            "id": self.id,
            "title": self.title,
            "section": self.section,
            "description": self.description,
            "figure": self.figure.to_plotly_json(),
            **({"help": self.help} if self.help else {}),
            **self.extra,
        }


def _failed_spec(fid: str, section: str, description: str, exc: Exception) -> FigureSpec:
    """The card of a figure whose builder raised: an empty figure and ``error`` saying why."""
    log.error("figure %s could not be drawn", fid, exc_info=exc)
    error = f"{type(exc).__name__}: {exc}"[:300]
    return FigureSpec(fid, fid, section, go.Figure(), description, {"error": error})


def _build(
    fid: str,
    section: str,
    description: str,
    build: Callable[[], go.Figure | None],
    report: Report | None = None,
) -> FigureSpec | None:
    """The spec of one figure with its ``help`` (:func:`~frontend.figures.help.figure_help`;
    with a run's ``report``, the sample its measure used)."""
    try:
        fig = build()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        spec = _failed_spec(fid, section, description, exc)
    else:
        if fig is None:
            return None
        spec = _spec(fid, section, fig, description)
    spec.help = figure_help(fid, spec.title, report)
    return spec


#: (id, section, builder, description) of every run-page figure, in page order; the page
#: draws each in the element ``fig-<id>``.
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

#: (id, section, builder, description) of every comparison figure, in page order.
COMPARE_FIGURES: tuple[tuple[str, str, CompareBuilder, str], ...] = (
    ("compare_margin_cdfs", "margins", compare_margin_cdfs, "One colour per run"),
    ("compare_margin_densities", "margins", compare_margin_densities, "Shared bins per kind"),
    ("compare_spectral_density", "curvature", compare_spectral_density, "SLQ densities"),
    ("compare_eigenvalues", "curvature", compare_eigenvalues, "Lanczos top eigenvalues"),
    ("compare_bounds", "bounds", compare_bounds, "Vacuous beyond the dotted line at 1"),
    ("gap_scatter", "study", gap_scatter, "Kendall τ-a across the runs (ties count 0)"),
)


def _spec(fid: str, section: str, fig: go.Figure, description: str) -> FigureSpec:
    title = fig.layout.title.text or fid
    return FigureSpec(fid, html.unescape(title), section, fig, description)


def run_figures(report: Report | None) -> list[FigureSpec]:
    """Every run-page figure the report has data for, in page order."""
    if not isinstance(report, Mapping):
        return []
    specs = []
    for fid, section, builder, description in RUN_FIGURES:
        spec = _build(fid, section, description, lambda b=builder: b(report), report)
        if spec is not None:
            specs.append(spec)
    return specs


def compare_figures(runs: Sequence[Mapping[str, Any]]) -> list[FigureSpec]:
    """Every comparison figure for ``runs`` (dicts with ``name``/``id`` and ``report``)."""
    runs = list(runs)[:MAX_COMPARE_RUNS]
    specs = []
    for fid, section, builder, description in COMPARE_FIGURES:
        spec = _build(fid, section, description, lambda b=builder: b(runs))
        if spec is not None:
            specs.append(spec)
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


def _model_name(report: Any) -> str | None:
    model = mapping(mapping(report).get("model"))
    return str(model.get("arch") or model.get("format") or "") or None


def _dataset_name(report: Any) -> str | None:
    name = mapping(mapping(report).get("data")).get("name")
    return str(name) if name is not None else None


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


def to_json(payload: Any) -> str:
    """Serialise a payload with plotly's encoder: numpy arrays as lists, NaN and infinities
    as null, and ``</`` escaped so the result is safe inside a ``<script>`` element."""
    return to_json_plotly(payload)
