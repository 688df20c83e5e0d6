"""Figures that cannot be misread: no "best" vacuous bound, log axes whose ticks read as
numbers, missing values shown as missing, Kendall τ with its interval and run count, per-layer
norms named by their object, and a "How to read this" text on every figure."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from frontend import figures as F
from frontend.figures.bounds import CONV_NORM_NOTE, NORM_OBJECTS
from frontend.figures.help import FIGURE_HELP
from frontend.figures.style import LOG_TICKFORMAT, WIDE_LOG_DECADES, log_axis
from frontend.figures.tables import TOO_FEW_RUNS
from frontend.stats import format_tau, kendall_tau_a, kendall_tau_interval
from genscope.norms import layer_norms
from tests.frontend.samples import named_runs, report

STATIC = Path(__file__).resolve().parents[2] / "frontend" / "static"


@pytest.fixture(scope="module")
def full() -> dict:
    return report("moons_mlp")


@pytest.fixture(scope="module")
def runs() -> list[dict[str, Any]]:
    return named_runs(4)


def _bound_runs(values: list[float | None], vacuous: list[bool | None]) -> list[dict]:
    """Runs whose report holds one bound with the given value and ``vacuous`` flag."""
    out = []
    for i, (v, vac) in enumerate(zip(values, vacuous, strict=True)):
        entry: dict[str, Any] = {"status": "ok", "value": v, "direction": "lower_is_better"}
        if vac is not None:
            entry["vacuous"] = vac
        out.append({"id": f"r{i}", "report": {"measures": {"bound.spectral": entry}}})
    return out


def _row(runs: list[dict], key: str) -> dict:
    return next(r for r in F.scalar_table(runs) if r["key"] == key)


# --- 1. a vacuous bound is never best ------------------------------------------------------------


def test_all_vacuous_bounds_mark_no_best() -> None:
    row = _row(_bound_runs([3.0, 12.0, 5e4], [True, True, True]), "bound.spectral")
    assert row["best"] == [] and row["note"] == "all vacuous"
    assert row["vacuous"] == [True, True, True]


def test_vacuous_by_value_when_the_flag_is_absent() -> None:
    row = _row(_bound_runs([1.0, 2.5], [None, None]), "bound.spectral")
    assert row["best"] == [] and row["note"] == "all vacuous"


def test_a_non_vacuous_bound_can_be_best() -> None:
    row = _row(_bound_runs([0.4, 2.5, 7.0], [False, True, True]), "bound.spectral")
    assert row["best"] == [0] and "note" not in row


def test_best_flagged_vacuous_by_the_engine_is_not_best() -> None:
    row = _row(_bound_runs([0.9, 0.95], [True, False]), "bound.spectral")
    assert row["best"] == [] and row["note"] == "best is vacuous"


def test_real_reports_mark_no_vacuous_best(runs: list[dict]) -> None:
    for row in F.scalar_table(runs):
        if row["key"].startswith("bound."):
            assert not any(row["vacuous"][i] for i in row["best"]), row
    metrics = _row(runs, "test_accuracy")
    assert "vacuous" not in metrics and metrics["best"]


# --- 2. log axes ---------------------------------------------------------------------------------


def _axes(layout: dict) -> dict[str, dict]:
    return {k: v for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))}


def _assert_readable_log(name: str, axis: dict) -> None:
    if axis.get("tickformat"):
        assert axis["tickformat"] == LOG_TICKFORMAT, name
    else:  # whole decades, labelled as powers of ten; minor ticks are never labelled
        assert axis.get("exponentformat") == "power", name
        assert isinstance(axis.get("dtick"), int) and axis["dtick"] >= 1, name


def test_every_log_axis_of_every_figure_reads_as_numbers(full: dict, runs: list[dict]) -> None:
    specs = F.run_figures(full) + F.run_figures(report("digits_mlp")) + F.compare_figures(runs)
    seen = 0
    for spec in specs:
        layout = json.loads(F.to_json(spec.figure))["layout"]
        for name, axis in _axes(layout).items():
            if axis.get("type") == "log":
                _assert_readable_log(f"{spec.id}.{name}", axis)
                seen += 1
        for menu in layout.get("updatemenus", []):
            for button in menu["buttons"]:
                for key, value in button["args"][-1].items():
                    if key.endswith(".type") and value == "log":
                        assert button["args"][-1][key[:-4] + "tickformat"] == LOG_TICKFORMAT
    assert seen >= 5  # the bounds, eigenvalues, density and sharpness figures at least


def test_log_axis_by_decade_span() -> None:
    narrow = log_axis([1.3, 61.9, 240.0])
    assert narrow["tickformat"] == LOG_TICKFORMAT and "dtick" not in narrow
    wide = log_axis([1e-9, 1e-3, 1.0])
    assert wide["dtick"] == 2 and wide["exponentformat"] == "power" and "minor" not in wide
    seven = log_axis([1e-3, 1e4])
    assert seven["dtick"] == 1 and seven["minor"]["dtick"] == "D1"
    assert log_axis([5.0])["tickformat"] == LOG_TICKFORMAT  # no span: plotly's own ticks
    edge = 10**WIDE_LOG_DECADES
    assert "tickformat" in log_axis([1.0, edge]) and "dtick" in log_axis([1.0, edge * 10])


def test_log_axis_settings_are_valid_plotly() -> None:
    fig = F.compare_bounds(_bound_runs([1e-4, 3e5], [False, True]))
    assert fig is not None
    assert fig.layout.xaxis.exponentformat == "power" and fig.layout.xaxis.dtick == 2
    fig.update_yaxes(**log_axis([1e-3, 1e4]))  # minor ticks validate
    assert fig.layout.yaxis.minor.dtick == "D1"


# --- 3. missing values shown as missing ----------------------------------------------------------


def test_compare_bounds_keeps_a_run_without_a_value(runs: list[dict]) -> None:
    runs = copy.deepcopy(runs)
    runs[1]["report"]["measures"].pop("bound.spectral")
    runs[2]["report"]["measures"]["bound.spectral"] = {
        "status": "skipped",
        "value": None,
        "reason": "needs the initial weights <init>",
    }
    fig = F.compare_bounds(runs)
    assert fig is not None
    data = json.loads(F.to_json(fig))["data"]
    legend = [t["name"] for t in data if t.get("showlegend", True)]
    assert legend == [F.esc(F.run_label(r, i)) for i, r in enumerate(runs)]
    stubs = {t["offsetgroup"]: t for t in data if t["name"].endswith(": no value")}
    without = {
        f"run{i}"
        for i, r in enumerate(runs)
        if F.num((r["report"]["measures"].get("bound.spectral") or {}).get("value")) is None
    }
    assert {"run1", "run2"} <= without and set(stubs) == without
    for group in without - {"run1", "run2"}:  # a real run whose bound has no value: its reason
        entry = runs[int(group[3:])]["report"]["measures"]["bound.spectral"]
        assert stubs[group]["hovertext"] == [F.esc(entry["reason"])]
    assert stubs["run1"]["y"] == ["spectral"] and stubs["run1"]["text"] == ["no value"]
    assert stubs["run1"]["hovertext"] == ["not computed in this run"]
    assert stubs["run2"]["hovertext"] == ["skipped: needs the initial weights &lt;init&gt;"]
    assert stubs["run2"]["marker"]["pattern"]["shape"] == "/"
    # the stub stays left of every value, inside the axis range
    lo = math.log10(min(t["x"][0] for t in data if t["x"][0] is not None))
    assert fig.layout.xaxis.range[0] < lo


def test_bound_breakdown_keeps_bounds_without_a_value(full: dict) -> None:
    rep = copy.deepcopy(full)
    rep["measures"]["bound.all_layer"] = {"status": "failed", "error": {"message": "no memory"}}
    fig = F.bound_breakdown(rep)
    bars, stubs = fig.data[0], fig.data[-1]
    missing = {
        mid.removeprefix("bound."): m
        for mid, m in rep["measures"].items()
        if mid.startswith("bound.") and F.num(m.get("value")) is None
    }
    assert stubs.name == "no value" and list(stubs.y) == sorted(missing)
    assert not set(bars.y) & set(stubs.y)
    reasons = dict(zip(stubs.y, stubs.hovertext, strict=True))
    assert reasons["all_layer"] == "failed: no memory"
    assert fig.layout.xaxis.range[0] < math.log10(stubs.x[0])


def test_missing_reason_of_failed_measure() -> None:
    entry = {"status": "failed", "error": {"code": "oom", "message": "out of memory"}}
    assert F.missing_reason(entry) == "failed: out of memory"
    assert F.missing_reason({"status": "ok", "value": None}) == "no finite value"


# --- 4. Kendall τ with its interval and run count ------------------------------------------------


def test_tau_interval_is_deterministic_and_bounded() -> None:
    x, y = [0.1, 0.5, 0.2, 0.9, 0.7, 0.3], [1, 4, 2, 6, 3, 5]
    lo, hi = kendall_tau_interval(x, y)
    assert -1 <= lo <= kendall_tau_a(x, y) <= hi <= 1
    assert kendall_tau_interval(x, y) == (lo, hi)
    assert kendall_tau_interval([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])[1] == 1.0
    assert kendall_tau_interval([1, None], [2, 3]) is None


def test_tau_label() -> None:
    assert format_tau(1 / 3, (-0.6, 1.0), 3) == "τ = 0.33 [−0.60, 1.00], n = 3 runs"
    assert format_tau(None, None, 1) == "τ undefined, n = 1 run"


def test_gap_correlations_carry_interval_count_and_notes(runs: list[dict]) -> None:
    rows = F.gap_correlations(runs)
    assert rows
    for row in rows:
        assert row["n"] == 4 and len(row["interval"]) == 2
        assert row["label"] == format_tau(row["tau"], tuple(row["interval"]), 4)
        assert row["notes"][0] == TOO_FEW_RUNS  # four runs
        assert not any("architecture" in n or "dataset" in n for n in row["notes"])
    fig = F.gap_scatter(runs)
    titles = [a.text for a in fig.layout.annotations]
    assert all("n = 4 runs" in t and "[" in t for t in titles)
    assert TOO_FEW_RUNS in fig.layout.title.subtitle.text


def test_gap_correlations_note_different_architectures_and_data(runs: list[dict]) -> None:
    mixed = [*copy.deepcopy(runs), {"id": "d", "name": "digits", "report": report("digits_mlp")}]
    mixed[0]["report"]["model"]["arch"] = "resnet18"
    notes = F.gap_correlations(mixed)[0]["notes"]
    assert any("architecture" in n for n in notes)
    assert any("dataset" in n and "digits" in n and "moons" in n for n in notes)


def test_five_runs_of_one_family_are_enough() -> None:
    rows = F.gap_correlations(named_runs(5))
    assert rows and all(TOO_FEW_RUNS not in r["notes"] for r in rows)


# --- 5. per-layer norms named by their object ----------------------------------------------------


def _conv_norms() -> list[dict[str, Any]]:
    """The engine's norms of a conv layer whose 3×3 taps are one rank-1 matrix: its operator
    norm is 3× its kernel's Frobenius norm, the bound √(k·k′) of CONV_NORM_NOTE."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    u, v = torch.randn(3), torch.randn(2)
    with torch.no_grad():
        conv.weight.copy_(torch.outer(u, v)[:, :, None, None].expand(3, 2, 3, 3))
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(3 * 16 * 16, 2)).eval()
    norms = layer_norms(model, torch.randn(1, 2, 16, 16))
    return [
        {"name": n.name, "kind": n.kind, "spectral": n.spectral, "frobenius": n.frobenius}
        for n in norms
    ]


def test_conv_operator_norm_exceeds_kernel_frobenius_within_the_bound() -> None:
    conv = _conv_norms()[0]
    assert conv["kind"] == "conv2d"
    assert conv["spectral"] > conv["frobenius"]
    assert conv["spectral"] <= 3 * conv["frobenius"] * (1 + 1e-6)  # √(3·3)
    assert conv["spectral"] > 2.5 * conv["frobenius"]  # zero padding: close to the bound


def test_complexity_layers_names_each_norms_object(full: dict) -> None:
    rep = copy.deepcopy(full)
    rep["measures"]["complexity.spectral"]["layers"] = _conv_norms()
    rep["measures"].pop("complexity.frobenius", None)
    fig = F.complexity_layers(rep)
    spectral, frobenius = fig.data
    assert spectral.name == NORM_OBJECTS["spectral"][0]
    assert "convolution at its input shape" in spectral.hovertext[0]
    assert "weight matrix" in spectral.hovertext[1]
    assert frobenius.hovertext[0].endswith("Frobenius norm of the kernel")
    assert "√(k·k′)" in fig.layout.title.subtitle.text and "Sedghi" in CONV_NORM_NOTE
    linear = F.complexity_layers(full)
    assert "same weight matrix" in linear.layout.title.subtitle.text


# --- 6. help next to every figure ----------------------------------------------------------------


def test_every_figure_has_help(full: dict, runs: list[dict]) -> None:
    assert {fid for fid, *_ in F.RUN_FIGURES + F.COMPARE_FIGURES} <= set(FIGURE_HELP)
    payload = F.run_payload({"report": full})["figures"] + F.compare_payload(runs)["figures"]
    assert payload
    for spec in payload:
        help_ = spec["help"]
        assert set(help_) == {"title", "text", "source", "anchor"}, spec["id"]
        assert all(help_[k] and "<" not in help_[k] for k in help_), spec["id"]
        assert help_["title"] == spec["title"]
    margins = next(s for s in F.run_figures(full) if s.id == "margin_distribution")
    assert "whole training set" in margins.help["text"]
    assert margins.help["anchor"] == "margin.output"


def test_failed_figure_keeps_its_help(full: dict) -> None:
    rep = copy.deepcopy(full)
    rep["measures"]["hessian.top_eigenvalues"]["values"] = "not an array"
    spec = next(s for s in F.run_figures(rep) if s.id == "hessian_eigenvalues")
    assert "error" in spec.extra and spec.help["anchor"] == "hessian.top_eigenvalues"


def test_render_figures_draws_the_help() -> None:
    app = (STATIC / "app.js").read_text(encoding="utf-8")
    body = app[
        app.index("function renderFigures(") : app.index(
            "// ---", app.index("function renderFigures(")
        )
    ]
    assert "How to read this" in body and "figureHelp(card, spec.help)" in body
    assert ".innerHTML" not in body
