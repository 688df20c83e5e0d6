"""Dashboard figures: pure functions from reports (plain dicts, schema ``genscope.report/1``)
to plotly figures, one module per family of measures, mirroring ``genscope/measures/``:

* :mod:`~frontend.figures.margins`, :mod:`~frontend.figures.curvature`,
  :mod:`~frontend.figures.sharpness`, :mod:`~frontend.figures.landscape`,
  :mod:`~frontend.figures.bounds`: the figures of a run;
* :mod:`~frontend.figures.tables`: the tables of a run and of a comparison;
* :mod:`~frontend.figures.compare`: the figures of a comparison;
* :mod:`~frontend.figures.payload`: what each page receives, in page order;
* :mod:`~frontend.figures.help`: the "How to read this" text of each figure;
* :mod:`~frontend.figures.common` (reading a report) and :mod:`~frontend.figures.style`.

Every builder takes decoded report dicts and reads the detail names the measure's result
schema declares; it returns a ``plotly.graph_objects.Figure``, or ``None`` when the report
lacks the measure or the detail (skipped, failed, not recorded). Long per-example arrays are
summarised (histograms) or downsampled (CDFs, scatters) so that payloads stay bounded; the
minimum and maximum are always kept. Text that comes from users (run names, layer names) is
HTML-escaped before it reaches plotly, which renders a subset of HTML in titles, legends and
hover labels.

The package is torch-free: the API process imports it.
"""

from __future__ import annotations

from frontend.figures.bounds import (
    bound_breakdown,
    bound_verdict,
    bounds_of,
    complexity_layers,
)
from frontend.figures.common import mapping, measure, measures_of, metric, missing_reason, num
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
from frontend.figures.help import FIGURE_HELP, figure_help
from frontend.figures.landscape import landscape_1d, landscape_2d
from frontend.figures.margins import (
    MARGIN_KINDS,
    hidden_margins,
    layer_shares,
    margin_class_cdf,
    margin_distribution,
    margin_per_class,
    margin_scatter,
    margin_values,
    robust_accuracy,
)
from frontend.figures.payload import (
    COMPARE_FIGURES,
    MAX_COMPARE_RUNS,
    RUN_FIGURES,
    FigureSpec,
    compare_figures,
    compare_payload,
    run_figures,
    run_payload,
    to_json,
)
from frontend.figures.sharpness import flatness_search, sharpness_curves
from frontend.figures.style import (
    ACCENT,
    BAD,
    GOOD,
    MAX_CDF_POINTS,
    MAX_CURVE_POINTS,
    MAX_SCATTER_POINTS,
    MUTED,
    RUN_COLORS,
    UIREVISION,
    esc,
    log_axis,
    run_color,
)
from frontend.figures.tables import (
    HEADLINE_MEASURES,
    METRIC_ROWS,
    bound_rows,
    flatten_terms,
    gap_correlations,
    headline_scalars,
    measure_rows,
    population_notes,
    scalar_table,
    sharpness_rows,
)

__all__ = [
    "ACCENT",
    "BAD",
    "COMPARE_FIGURES",
    "FIGURE_HELP",
    "GOOD",
    "HEADLINE_MEASURES",
    "MARGIN_KINDS",
    "MAX_CDF_POINTS",
    "MAX_COMPARE_RUNS",
    "MAX_CURVE_POINTS",
    "MAX_SCATTER_POINTS",
    "METRIC_ROWS",
    "MUTED",
    "RUN_COLORS",
    "RUN_FIGURES",
    "UIREVISION",
    "FigureSpec",
    "bound_breakdown",
    "bound_rows",
    "bound_verdict",
    "bounds_of",
    "compare_bounds",
    "compare_eigenvalues",
    "compare_figures",
    "compare_margin_cdfs",
    "compare_margin_densities",
    "compare_payload",
    "compare_spectral_density",
    "complexity_layers",
    "esc",
    "figure_help",
    "flatness_search",
    "flatten_terms",
    "gap_correlations",
    "gap_scatter",
    "headline_scalars",
    "hessian_density",
    "hessian_eigenvalues",
    "hidden_margins",
    "landscape_1d",
    "landscape_2d",
    "layer_shares",
    "layer_spectra",
    "log_axis",
    "mapping",
    "margin_class_cdf",
    "margin_distribution",
    "margin_per_class",
    "margin_scatter",
    "margin_values",
    "measure",
    "measure_rows",
    "measures_of",
    "metric",
    "missing_reason",
    "ntk_spectrum",
    "num",
    "population_notes",
    "robust_accuracy",
    "run_color",
    "run_figures",
    "run_label",
    "run_payload",
    "scalar_table",
    "sharpness_curves",
    "sharpness_rows",
    "to_json",
]
