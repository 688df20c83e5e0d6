"""Figure builders: the right traces and axes, bounded payloads, escaping, missing data."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

from frontend import figures as F
from tests.frontend.samples import full_report, named_runs, real_report, stripped


def _decode(fig: go.Figure) -> dict:
    """The figure as plotly.js receives it (base64 typed arrays decoded)."""
    return json.loads(F.to_json(fig))


def _array(value: object) -> np.ndarray:
    """A trace array from its JSON form: a list, or plotly's ``{dtype, bdata}``."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)


@pytest.fixture(scope="module")
def report() -> dict:
    return full_report(seed=0)


def test_every_run_figure_is_built_and_serialises(report: dict) -> None:
    specs = F.run_figures(report)
    ids = [s.id for s in specs]
    expected = {fid for fid, *_ in F.RUN_FIGURES} - {"margin_class_cdf"}  # needs labels
    assert set(ids) == expected
    for spec in specs:
        data = _decode(spec.figure)
        assert data["data"], spec.id
        assert data["layout"]["uirevision"] == F.UIREVISION
    text = F.to_json(F.run_payload({"report": report}))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["figures"]


def test_real_engine_report_draws_its_figures() -> None:
    report = real_report()
    ids = {s.id for s in F.run_figures(report)}
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
    two = F.landscape_2d(report)
    assert two is not None
    m = report["measures"]["landscape.slice_2d"]
    z = np.asarray(two.data[0].z)
    assert z[2, 5] == m["loss"][5][2]
    # bounds without a value still get a row with the reason
    rows = {r["id"]: r for r in F.bound_rows(report)}
    assert all(r["note"] for r in rows.values() if r["value"] is None)
    text = F.to_json(F.run_payload({"report": report}))
    assert len(text) < 400_000
    shares = F.layer_shares(report)  # the engine's "loads": [{point, mean_share}]
    assert shares is not None
    loads = report["measures"]["margin.all_layer"]["loads"]
    assert list(shares.data[0].y) == [x["mean_share"] for x in loads]


def test_margin_distribution_has_hist_and_cdf_per_kind(report: dict) -> None:
    fig = F.margin_distribution(report)
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
    values = np.asarray(report["measures"]["margin.output"]["values"], dtype=np.float32)
    assert len(cdf.x) <= F.MAX_CDF_POINTS
    assert cdf.x[0] == values.min() and cdf.x[-1] == values.max()
    assert cdf.y[-1] == 1.0
    # menus: one kind switch + the linear/log toggle
    labels = [b.label for menu in fig.layout.updatemenus for b in menu.buttons]
    assert "All-layer margin" in labels and "log x" in labels


def test_per_class_boxes_one_trace_per_class(report: dict) -> None:
    fig = F.margin_per_class(report)
    assert fig is not None
    assert [t.name for t in fig.data] == [f"class {c}" for c in range(10)]
    first = report["measures"]["margin.output"]["per_class"][0]
    assert fig.data[0].median[0] == pytest.approx(first["p50"])
    assert fig.data[0].lowerfence[0] == pytest.approx(first["p10"])


def test_per_class_cdf_only_with_labels(report: dict) -> None:
    assert F.margin_class_cdf(report) is None
    rep = copy.deepcopy(report)
    n = len(rep["measures"]["margin.output"]["values"])
    rep["measures"]["margin.output"]["labels"] = [i % 3 for i in range(n)]
    fig = F.margin_class_cdf(rep)
    assert fig is not None and [t.name for t in fig.data] == ["class 0", "class 1", "class 2"]


def test_scatter_downsamples_and_keeps_extremes() -> None:
    rep = full_report(seed=1, n=30_000)
    fig = F.margin_scatter(rep)
    assert fig is not None
    xs = np.concatenate([np.asarray(t.x) for t in fig.data])
    ys = np.concatenate([np.asarray(t.y) for t in fig.data])
    assert len(xs) <= F.MAX_SCATTER_POINTS
    out = np.asarray(rep["measures"]["margin.output"]["values"], dtype=np.float32)
    al = np.asarray(rep["measures"]["margin.all_layer"]["values"], dtype=np.float32)
    assert xs.min() == out.min() and xs.max() == out.max()
    assert ys.min() == al.min() and ys.max() == al.max()
    assert {t.name for t in fig.data} == {"correct", "misclassified"}


def test_scatter_pairs_by_indices_or_gives_up(report: dict) -> None:
    rep = copy.deepcopy(report)
    al = rep["measures"]["margin.all_layer"]
    al["values"] = al["values"][:100]
    assert F.margin_scatter(rep) is None  # different lengths and no indices: no pairing
    al["indices"] = list(range(0, 200, 2))
    fig = F.margin_scatter(rep)
    assert fig is not None and sum(len(t.x) for t in fig.data) == 100


def test_curvature_figures(report: dict) -> None:
    eig = F.hessian_eigenvalues(report)
    assert eig is not None and eig.layout.yaxis.type == "log"
    assert list(eig.data[0].y) == report["measures"]["hessian.top_eigenvalues"]["values"]
    dens = F.hessian_density(report)
    assert dens is not None and dens.layout.yaxis.type == "log"
    assert [t.name for t in dens.data] == ["Hessian density", "Hessian outliers"]
    assert len(dens.data[1].x) == 2
    assert np.all(np.asarray(dens.data[0].y) > 0)  # zeros floored for the log axis
    spectra = F.layer_spectra(report)
    assert spectra is not None and [t.name for t in spectra.data] == ["λ_max", "trace"]


def test_sharpness_landscape_and_bounds(report: dict) -> None:
    sharp = F.sharpness_curves(report)
    assert sharp is not None and [t.name for t in sharp.data] == ["sharpness.sam"]
    assert sharp.layout.xaxis.type == "log"
    one = F.landscape_1d(report)
    assert one is not None and len(one.data[0].x) == 41
    two = F.landscape_2d(report)
    assert two is not None and isinstance(two.data[0], go.Contour)
    assert np.asarray(two.data[0].z).shape == (21, 21)
    bounds = F.bound_breakdown(report)
    assert bounds is not None
    bar = bounds.data[0]
    assert list(bar.y) == ["pacbayes_sharpness", "spectral"]
    assert list(bar.marker.color) == [F.GOOD, F.BAD]  # the spectral bound is vacuous
    texts = [a.text for a in bounds.layout.annotations]
    assert any("measured test error" in t for t in texts)


def test_bound_rows_flatten_terms(report: dict) -> None:
    rows = {r["id"]: r for r in F.bound_rows(report)}
    assert rows["bound.spectral"]["vacuous"] is True
    assert ["complexity", 349.9] in rows["bound.spectral"]["terms"]
    assert rows["bound.spectral"]["verdict"] == "vacuous"
    assert rows["bound.pacbayes_sharpness"]["verdict"] == "informative"


def test_a_bound_below_one_but_above_guessing_is_not_informative(report: dict) -> None:
    """0.999998 is not vacuous, and not informative either (measures.md, Bounds): the table
    and the bar chart say so instead of colouring it as a good bound."""
    report = copy.deepcopy(report)
    bound = report["measures"]["bound.pacbayes_sharpness"]
    bound.update(value=0.999998, vacuous=False, informative=False, informative_below=0.9)
    rows = {r["id"]: r for r in F.bound_rows(report)}
    assert rows["bound.pacbayes_sharpness"]["verdict"] == "not informative"
    assert rows["bound.pacbayes_sharpness"]["informative_below"] == 0.9
    fig = F.bound_breakdown(report)
    assert fig is not None
    bar = fig.data[0]
    at = list(bar.y).index("pacbayes_sharpness")
    assert bar.marker.color[at] == F.MUTED and "not informative" in bar.text[at]
    del bound["informative"]  # a report from before the field: no claim either way
    assert F.bound_verdict(bound) == "non-vacuous"


@pytest.mark.parametrize(
    "drop",
    [
        ("margin.all_layer",),
        ("margin.output", "margin.all_layer", "margin.normalized"),
        ("hessian.density", "hessian.top_eigenvalues"),
        tuple(full_report()["measures"]),
    ],
)
def test_missing_measures_give_no_figure_not_a_crash(report: dict, drop: tuple[str, ...]) -> None:
    specs = F.run_figures(stripped(report, *drop))
    for spec in specs:
        assert spec.figure.data
    if len(drop) > 5:
        assert specs == []


def test_malformed_and_nan_data_never_crash(report: dict) -> None:
    rep = copy.deepcopy(report)
    ms = rep["measures"]
    ms["margin.output"]["values"] = [None, float("nan"), 1.0, float("inf"), 2.0]
    ms["margin.all_layer"]["values"] = "not a list"
    ms["margin.all_layer"]["layer_shares"] = [{"oops": 1}]
    ms["hessian.top_eigenvalues"]["values"] = [None, None]
    ms["hessian.density"]["grid"] = [1, 2, 3]  # length mismatch
    ms["hessian.layer_spectra"]["layers"] = {"fc1": "x"}
    ms["landscape.slice_2d"]["loss"] = [[1, 2], [3]]
    ms["sharpness.sam"]["curve"] = {"rho": [1], "value": [1, 2]}
    ms["bound.spectral"]["terms"] = "opaque"
    ms["hessian.trace"] = None
    specs = F.run_figures(rep)
    ids = {s.id for s in specs}
    assert "margin_distribution" in ids
    assert "hessian_density" not in ids and "landscape_2d" not in ids
    text = F.to_json(F.run_payload({"report": rep}))
    assert "NaN" not in text
    assert F.run_figures({}) == [] and F.run_figures(None) == []  # type: ignore[arg-type]
    assert F.run_payload({"report": None})["figures"] == []
    assert F.compare_payload([])["figures"] == []


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


def test_compare_payload_is_bounded_for_twenty_large_runs() -> None:
    runs = [
        {"id": f"r{i}", "name": f"run {i}", "report": full_report(seed=i, n=5_000)}
        for i in range(21)
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
    assert "complexity.failed" not in rows


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


def test_user_text_is_escaped_in_figures() -> None:
    runs = named_runs(3)
    runs[0]["name"] = '<img src=x onerror="alert(1)">'
    runs[1]["report"]["measures"]["margin.all_layer"]["layer_shares"] = {"<b>fc</b>": 1.0}
    payload = F.compare_payload(runs)
    text = F.to_json(payload)
    assert "<img" not in text and '&lt;img src=x onerror=\\"alert(1)\\"&gt;' in text
    assert payload["runs"][0]["name"] == runs[0]["name"]  # plain text, escaped by the page
    shares = F.layer_shares(runs[1]["report"])
    assert shares is not None and list(shares.data[0].x) == ["&lt;b&gt;fc&lt;/b&gt;"]
    # the JSON is safe inside a <script> element
    assert "</" not in F.to_json({"title": "</script><script>alert(1)</script>"})


def test_headline_scalars(report: dict) -> None:
    head = F.headline_scalars(report)
    assert head["test_accuracy"] == report["metrics"]["test_accuracy"]
    assert head["hessian.top_eigenvalues"] == report["measures"]["hessian.top_eigenvalues"]["value"]
    assert head["bound.spectral"] == 350.0
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
