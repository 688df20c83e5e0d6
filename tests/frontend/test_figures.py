"""Figure builders on real engine reports: the right traces and axes, bounded payloads,
escaping, missing measures, non-finite values, and malformed details caught."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from frontend import figures as F
from tests.frontend.samples import enlarged, named_runs, report, stored_report, stripped

#: The sharpness measures defined by a radius: each records its ρ sweep.
RADIUS_MEASURES = (
    "sharpness.adaptive_average",
    "sharpness.adaptive_worst",
    "sharpness.keskar",
    "sharpness.sam",
)


def _decode(fig: go.Figure) -> dict:
    """The figure as plotly.js receives it (base64 typed arrays decoded)."""
    return json.loads(F.to_json(fig))


def _array(value: object) -> np.ndarray:
    """A trace array from its JSON form: a list, or plotly's ``{dtype, bdata}``."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)


@pytest.fixture(scope="module")
def full() -> dict:
    """The engine's report of an MLP on moons with every measure a figure draws."""
    return report("moons_mlp")


@pytest.fixture(scope="module")
def digits() -> dict:
    """The engine's report of an MLP on digits (ten classes)."""
    return report("digits_mlp")


def test_every_run_figure_is_drawn_from_a_real_report(full: dict, digits: dict) -> None:
    ids = {s.id for s in F.run_figures(full)}
    assert ids == {fid for fid, *_ in F.RUN_FIGURES}
    for spec in F.run_figures(full) + F.run_figures(digits):
        data = _decode(spec.figure)
        assert data["data"], spec.id
        assert data["layout"]["uirevision"] == F.UIREVISION
    text = F.to_json(F.run_payload({"report": full}))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["figures"]


def test_every_compare_figure_is_drawn_from_real_reports() -> None:
    ids = {s.id for s in F.compare_figures(named_runs(4))}
    assert ids == {fid for fid, *_ in F.COMPARE_FIGURES}


def test_stored_engine_report_draws_its_figures() -> None:
    rep = stored_report()
    ids = {s.id for s in F.run_figures(rep)}
    assert {
        "margin_distribution",
        "margin_per_class",
        "margin_scatter",
        "layer_shares",
        "hidden_margins",
        "robust_accuracy",
        "hessian_eigenvalues",
        "hessian_density",
        "layer_spectra",
        "landscape_1d",
        "landscape_2d",
        "bound_breakdown",
    } <= ids
    # the engine stores loss[i][j] at (alphas[i], betas[j]): plotly gets z[beta][alpha]
    two = F.landscape_2d(rep)
    assert two is not None
    m = rep["measures"]["landscape.slice_2d"]
    z = np.asarray(two.data[0].z)
    assert z[2, 5] == m["loss"][5][2]
    # bounds without a value still get a row with the reason
    rows = {r["id"]: r for r in F.bound_rows(rep)}
    assert all(r["note"] for r in rows.values() if r["value"] is None)
    text = F.to_json(F.run_payload({"report": rep}))
    assert len(text) < 400_000
    shares = F.layer_shares(rep)  # the engine's "loads": [{point, mean_share}]
    assert shares is not None
    loads = rep["measures"]["margin.all_layer"]["loads"]
    assert list(shares.data[0].y) == [x["mean_share"] for x in loads]


def test_margin_distribution_has_hist_and_cdf_per_kind(full: dict) -> None:
    fig = F.margin_distribution(full)
    assert fig is not None
    kinds = [t.name for t in fig.data]
    assert kinds == [
        "Output margin histogram",
        "Output margin CDF",
        "All-layer margin histogram",
        "All-layer margin CDF",
        "Normalized margin histogram",
        "Normalized margin CDF",
    ]
    assert [t.visible for t in fig.data] == [True, True, False, False, False, False]
    cdf = fig.data[1]
    values = np.asarray(full["measures"]["margin.output"]["values"], dtype=np.float32)
    assert len(cdf.x) <= F.MAX_CDF_POINTS
    assert cdf.x[0] == values.min() and cdf.x[-1] == values.max()
    assert cdf.y[-1] == 1.0
    # menus: one kind switch + the linear/log toggle
    labels = [b.label for menu in fig.layout.updatemenus for b in menu.buttons]
    assert "All-layer margin" in labels and "log x" in labels


def test_per_class_boxes_one_trace_per_class(digits: dict) -> None:
    fig = F.margin_per_class(digits)
    assert fig is not None
    assert [t.name for t in fig.data if t.visible] == [f"class {c}" for c in range(10)]
    first = digits["measures"]["margin.output"]["per_class"][0]
    assert fig.data[0].median[0] == pytest.approx(first["p50"])
    assert fig.data[0].lowerfence[0] == pytest.approx(first["p10"])


def test_per_class_cdf_from_the_engines_labels(digits: dict) -> None:
    out = digits["measures"]["margin.output"]
    assert len(out["labels"]) == len(out["values"])
    fig = F.margin_class_cdf(digits)
    assert fig is not None and [t.name for t in fig.data] == [f"class {c}" for c in range(10)]
    for c, trace in enumerate(fig.data):  # each line ends at the class's largest margin
        mine = [v for v, y in zip(out["values"], out["labels"], strict=True) if y == c]
        assert trace.x[-1] == np.float32(max(mine)) and trace.y[-1] == 1.0
    rep = copy.deepcopy(digits)
    del rep["measures"]["margin.output"]["labels"]  # a report without labels: no figure
    assert F.margin_class_cdf(rep) is None


def test_scatter_downsamples_and_keeps_extremes(digits: dict) -> None:
    rep = enlarged(digits, 30_000)
    fig = F.margin_scatter(rep)
    assert fig is not None
    xs = np.concatenate([np.asarray(t.x) for t in fig.data])
    ys = np.concatenate([np.asarray(t.y) for t in fig.data])
    assert len(xs) <= F.MAX_SCATTER_POINTS
    out = np.asarray(rep["measures"]["margin.output"]["values"], dtype=np.float32)
    al = np.asarray(
        [np.nan if v is None else v for v in rep["measures"]["margin.all_layer"]["values"]],
        dtype=np.float32,
    )
    assert xs.min() == out.min() and xs.max() == out.max()
    assert ys.min() == np.nanmin(al) and ys.max() == np.nanmax(al)
    assert {t.name for t in fig.data} == {"correct", "misclassified"}


def test_scatter_pairs_the_same_examples_only(digits: dict) -> None:
    fig = F.margin_scatter(digits)
    assert fig is not None
    finite = [
        (a, b)
        for a, b in zip(
            digits["measures"]["margin.output"]["values"],
            digits["measures"]["margin.all_layer"]["values"],
            strict=True,
        )
        if a is not None and b is not None
    ]
    assert sum(len(t.x) for t in fig.data) == len(finite)
    rep = copy.deepcopy(digits)
    al = rep["measures"]["margin.all_layer"]
    al["values"] = al["values"][:100]
    assert F.margin_scatter(rep) is None  # a sample of other examples: no pairing


def test_curvature_figures(full: dict) -> None:
    ms = full["measures"]
    eig = F.hessian_eigenvalues(full)
    assert eig is not None and eig.layout.yaxis.type == "log"
    assert list(eig.data[0].y) == ms["hessian.top_eigenvalues"]["values"]
    assert [t.name for t in eig.data] == ["Hessian", "GGN"]
    assert any("λ_min" in a.text for a in eig.layout.annotations)
    dens = F.hessian_density(full)
    assert dens is not None and dens.layout.yaxis.type == "log"
    names = [t.name for t in dens.data]
    assert names[0] == "Hessian density" and "GGN density" in names
    outliers = ms["hessian.density"]["outliers"]["values"]
    if outliers:
        assert names[1] == "Hessian outliers" and list(dens.data[1].x) == outliers
    assert np.all(np.asarray(dens.data[0].y) > 0)  # zeros floored for the log axis
    spectra = F.layer_spectra(full)
    assert spectra is not None and [t.name for t in spectra.data] == ["λ_max", "trace"]
    assert list(spectra.data[0].x) == [r["layer"] for r in ms["hessian.layer_spectra"]["layers"]]
    ntk = F.ntk_spectrum(full)
    assert ntk is not None and len(ntk.data[0].y) == len(ms["ntk.spectrum"]["eigenvalues"])


def test_sharpness_curves_from_the_engines_rho_sweeps(full: dict) -> None:
    sharp = F.sharpness_curves(full)
    assert sharp is not None
    assert [t.name for t in sharp.data] == list(RADIUS_MEASURES)
    sam = full["measures"]["sharpness.sam"]["rho_curve"]
    trace = sharp.data[[t.name for t in sharp.data].index("sharpness.sam")]
    assert list(trace.x) == sorted(sam["rho"])
    assert len(trace.error_y.array) == len(sam["stderr"])
    assert sharp.layout.xaxis.type == "log"
    search = F.flatness_search(full)
    assert search is not None and [t.name for t in search.data] == [
        "N(0, σ²I)",
        "magnitude-aware σ'",
    ]


def test_landscape_figures(full: dict) -> None:
    ms = full["measures"]
    one = F.landscape_1d(full)
    assert one is not None and [t.name for t in one.data] == ["slice", "interpolation"]
    assert list(one.data[0].x) == ms["landscape.slice_1d"]["alphas"]
    assert list(one.data[1].x) == ms["landscape.interpolate"]["t"]
    two = F.landscape_2d(full)
    assert two is not None and isinstance(two.data[0], go.Contour)
    n = ms["landscape.slice_2d"]["points"]
    assert np.asarray(two.data[0].z).shape == (n, n)
    assert two.data[0].z[1][3] == ms["landscape.slice_2d"]["loss"][3][1]


def test_bound_breakdown_colours_each_verdict(full: dict, digits: dict) -> None:
    for rep in (full, digits):
        bounds = F.bound_breakdown(rep)
        assert bounds is not None
        bar = bounds.data[0]
        with_value = F.bounds_of(rep)
        assert list(bar.y) == [mid.removeprefix("bound.") for mid, _ in with_value]
        colour = {"vacuous": F.BAD, "not informative": F.MUTED}
        expected = [colour.get(F.bound_verdict(m), F.GOOD) for _, m in with_value]
        assert list(bar.marker.color) == expected
        texts = [a.text for a in bounds.layout.annotations]
        assert any("measured test error" in t for t in texts)
    rep = copy.deepcopy(full)
    rep["measures"]["bound.pacbayes_sharpness"].update(value=1.5, vacuous=True)
    bar = F.bound_breakdown(rep).data[0]
    assert bar.marker.color[list(bar.y).index("pacbayes_sharpness")] == F.BAD


def test_bound_rows_flatten_terms(full: dict) -> None:
    rows = {r["id"]: r for r in F.bound_rows(full)}
    spectral = full["measures"]["bound.spectral"]
    assert rows["bound.spectral"]["vacuous"] is spectral["vacuous"]
    assert ["n", spectral["terms"]["n"]] in rows["bound.spectral"]["terms"]
    assert ["delta", spectral["terms"]["delta"]] in rows["bound.spectral"]["terms"]
    for mid, row in rows.items():
        m = full["measures"][mid]
        if m["value"] is None:
            assert row["note"] == m["reason"]
        assert row["verdict"] == F.bound_verdict(m)


def test_a_bound_below_one_but_above_guessing_is_not_informative(full: dict) -> None:
    """0.999998 is not vacuous, and not informative either (measures.md, Bounds): the table
    and the bar chart say so instead of colouring it as a good bound."""
    rep = copy.deepcopy(full)
    bound = rep["measures"]["bound.pacbayes_sharpness"]
    bound.update(value=0.999998, vacuous=False, informative=False, informative_below=0.9)
    rows = {r["id"]: r for r in F.bound_rows(rep)}
    assert rows["bound.pacbayes_sharpness"]["verdict"] == "not informative"
    assert rows["bound.pacbayes_sharpness"]["informative_below"] == 0.9
    fig = F.bound_breakdown(rep)
    assert fig is not None
    bar = fig.data[0]
    at = list(bar.y).index("pacbayes_sharpness")
    assert bar.marker.color[at] == F.MUTED and "not informative" in bar.text[at]
    bound.update(informative=True)
    assert F.bound_verdict(bound) == "informative"
    del bound["informative"]  # a report from before the field: no claim either way
    assert F.bound_verdict(bound) == "non-vacuous"


ALL = "every measure"


@pytest.mark.parametrize(
    "drop",
    [
        ("margin.all_layer",),
        ("margin.output", "margin.all_layer", "margin.normalized"),
        ("hessian.density", "hessian.top_eigenvalues"),
        tuple(RADIUS_MEASURES),
        (ALL,),
    ],
)
def test_missing_measures_give_no_figure_not_a_crash(full: dict, drop: tuple[str, ...]) -> None:
    gone = tuple(full["measures"]) if drop == (ALL,) else drop
    specs = F.run_figures(stripped(full, *gone))
    for spec in specs:
        assert spec.figure.data
    ids = {s.id for s in specs}
    if "margin.all_layer" in gone:
        assert not ids & {"margin_scatter", "layer_shares"}
    if set(RADIUS_MEASURES) <= set(gone):
        assert "sharpness_curves" not in ids
    if drop == (ALL,):
        assert specs == []


def test_failed_and_skipped_measures_give_no_figure(full: dict) -> None:
    rep = copy.deepcopy(full)
    for mid in ("hessian.density", "ggn.density"):  # as the engine writes a failure
        rep["measures"][mid] = {
            "value": None,
            "status": "failed",
            "error": {"code": "failed", "message": "it broke"},
        }
    rep["measures"]["landscape.slice_2d"] = {"value": None, "status": "ok", "reason": "skipped"}
    ids = {s.id for s in F.run_figures(rep)}
    assert "hessian_density" not in ids and "landscape_2d" not in ids
    notes = {r["id"]: r["note"] for r in F.measure_rows(rep)}
    assert notes["hessian.density"] == "it broke" and notes["landscape.slice_2d"] == "skipped"


def test_non_finite_values_are_gaps_not_crashes(full: dict) -> None:
    rep = copy.deepcopy(full)
    ms = rep["measures"]
    ms["margin.output"]["values"][:4] = [None, float("nan"), float("inf"), -float("inf")]
    ms["hessian.top_eigenvalues"]["values"] = [None] * 3
    ms["ggn.top_eigenvalues"]["values"] = [None] * 3
    ms["sharpness.sam"]["rho_curve"]["value"][0] = None
    ms["hessian.trace"] = None  # a measure the engine could not serialise
    ids = {s.id for s in F.run_figures(rep)}
    assert {"margin_distribution", "margin_class_cdf", "sharpness_curves"} <= ids
    eig = F.hessian_eigenvalues(rep)
    assert eig is not None and all(v is None for v in eig.data[0].y)
    text = F.to_json(F.run_payload({"report": rep}))
    assert "NaN" not in text and "Infinity" not in text
    assert F.run_figures({}) == [] and F.run_figures(None) == []
    assert F.run_payload({"report": None})["figures"] == []
    assert F.compare_payload([])["figures"] == []


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict], None]:
    def apply(rep: dict) -> None:
        node = rep["measures"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    ("builder", "corrupt"),
    [
        (F.margin_distribution, _set(("margin.all_layer", "values"), "not a list")),
        (F.margin_class_cdf, _set(("margin.output", "labels"), [0, 1])),
        (F.layer_shares, _set(("margin.all_layer", "loads"), [{"oops": 1}])),
        (F.hessian_density, _set(("hessian.density", "grid"), [1, 2, 3])),
        (F.layer_spectra, _set(("hessian.layer_spectra", "layers"), [{"name": "fc1"}])),
        (F.landscape_2d, _set(("landscape.slice_2d", "loss"), [[1, 2], [3]])),
        (F.sharpness_curves, _set(("sharpness.sam", "rho_curve"), {"rho": [1], "value": [1, 2]})),
        (F.landscape_1d, _set(("landscape.slice_1d", "alphas"), [0.0])),
    ],
)
def test_a_detail_of_another_shape_than_declared_is_caught(
    full: dict, builder: Callable[[dict], Any], corrupt: Callable[[dict], None]
) -> None:
    """A report that departs from its measure's schema is a bug: it raises instead of
    silently dropping the figure."""
    rep = copy.deepcopy(full)
    corrupt(rep)
    with pytest.raises((KeyError, TypeError, ValueError)):
        builder(rep)


def test_a_figure_that_cannot_be_drawn_says_so_and_the_page_still_serves(
    full: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The page assembly neither hides a departure (as "no figure") nor fails the page: the
    figure's card carries the error, it is logged, the other figures and tables are there."""
    clean = F.run_payload({"report": full})
    assert not [f["id"] for f in clean["figures"] if f.get("error")]  # the engine's report
    rep = copy.deepcopy(full)
    _set(("sharpness.sam", "rho_curve"), {"rho": [1], "value": [1, 2]})(rep)
    with caplog.at_level("ERROR", logger="genscope.dashboard"):
        payload = F.run_payload({"report": rep})
    by_id = {f["id"]: f for f in payload["figures"]}
    assert by_id["sharpness_curves"]["error"].startswith("ValueError")
    assert "sharpness_curves" in caplog.text
    assert {f["id"] for f in clean["figures"]} == set(by_id)
    assert payload["measures"] == clean["measures"] and payload["bounds"] == clean["bounds"]
    F.to_json(payload)  # still serialisable


def test_compare_overlays_one_colour_per_run() -> None:
    runs = named_runs(4)
    fig = F.compare_margin_cdfs(runs)
    assert fig is not None
    visible = [t for t in fig.data if t.visible]
    assert [t.name for t in visible] == ["run 0", "run 1", "run 2", "run 3"]
    assert [t.line.color for t in visible] == [F.run_color(i) for i in range(4)]
    dens = F.compare_spectral_density(runs)
    assert dens is not None
    assert [t.line.color for t in dens.data] == [F.run_color(i) for i in range(4)]
    densities = F.compare_margin_densities(runs)
    assert densities is not None
    # shared bins: every run's first visible trace has the same x
    xs = [tuple(t.x) for t in densities.data if t.visible]
    assert len(set(xs)) == 1
    eig = F.compare_eigenvalues(runs)
    assert eig is not None and [t.name for t in eig.data] == ["run 0", "run 1", "run 2", "run 3"]


def test_compare_payload_is_bounded_for_twenty_large_runs() -> None:
    runs = [
        {**run, "report": enlarged(run["report"], 5_000, seed=i)}
        for i, run in enumerate(named_runs(21))
    ]
    payload = F.compare_payload(runs)
    assert len(payload["runs"]) == F.MAX_COMPARE_RUNS and payload["omitted"] == 1
    assert len(F.to_json(payload)) < 1_500_000
    cdfs = next(f for f in payload["figures"] if f["id"] == "compare_margin_cdfs")
    for trace in cdfs["figure"]["data"]:
        x = _array(trace["x"])
        assert len(x) <= F.MAX_CDF_POINTS


def test_scalar_table_best_per_row_by_direction() -> None:
    runs = named_runs(3)
    for run in runs:  # as the engine writes a failed measure
        run["report"]["measures"]["complexity.path_norm"] = {
            "value": None,
            "status": "failed",
            "error": {"code": "failed", "message": "it broke"},
        }
    rows = {r["key"]: r for r in F.scalar_table(runs)}
    gap = rows["generalization_gap"]
    assert gap["best"] == [int(np.argmin(gap["values"]))]
    acc = rows["test_accuracy"]
    assert acc["best"] == [int(np.argmax(acc["values"]))]
    # a measure without a direction is never highlighted
    assert rows["hessian.density"]["best"] == [] if "hessian.density" in rows else True
    eig = rows["hessian.top_eigenvalues"]
    assert eig["direction"] == "lower_is_better"
    assert eig["best"] == [int(np.argmin(eig["values"]))]
    assert "complexity.path_norm" not in rows


def test_gap_scatter_needs_three_runs_and_reports_tau() -> None:
    assert F.gap_scatter(named_runs(2)) is None
    runs = named_runs(4)
    fig = F.gap_scatter(runs)
    assert fig is not None
    corr = {c["key"]: c for c in F.gap_correlations(runs)}
    gaps = [r["report"]["metrics"]["generalization_gap"] for r in runs]
    values = [r["report"]["measures"]["sharpness.sam"]["value"] for r in runs]
    from frontend.stats import kendall_tau_a

    assert corr["sharpness.sam"]["tau"] == pytest.approx(kendall_tau_a(values, gaps))
    titles = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("sharpness.sam<br>τ = ") for t in titles)
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["run 0", "run 1", "run 2", "run 3"]


def test_user_text_is_escaped_in_figures(full: dict) -> None:
    runs = named_runs(3)
    runs[0]["name"] = '<img src=x onerror="alert(1)">'
    runs[1]["report"] = copy.deepcopy(full)
    runs[1]["report"]["measures"]["margin.all_layer"]["loads"][0]["point"] = "<b>fc</b>"
    payload = F.compare_payload(runs)
    text = F.to_json(payload)
    assert "<img" not in text and '&lt;img src=x onerror=\\"alert(1)\\"&gt;' in text
    assert payload["runs"][0]["name"] == runs[0]["name"]  # plain text, escaped by the page
    shares = F.layer_shares(runs[1]["report"])
    assert shares is not None and shares.data[0].x[0] == "&lt;b&gt;fc&lt;/b&gt;"
    # the JSON is safe inside a <script> element
    assert "</" not in F.to_json({"title": "</script><script>alert(1)</script>"})


def test_headline_scalars(full: dict) -> None:
    head = F.headline_scalars(full)
    assert head["test_accuracy"] == full["metrics"]["test_accuracy"]
    ms = full["measures"]
    assert head["hessian.top_eigenvalues"] == ms["hessian.top_eigenvalues"]["value"]
    assert head["sharpness.adaptive_worst"] == ms["sharpness.adaptive_worst"]["value"]
    for mid, m in F.bounds_of(full):
        assert head[mid] == m["value"]
    assert F.headline_scalars(None)["test_accuracy"] is None


def test_frontend_modules_do_not_import_torch() -> None:
    code = (
        "import sys, frontend.figures, frontend.stats, frontend.pages; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
