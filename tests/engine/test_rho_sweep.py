"""Radius sweeps of the sharpness measures defined by a radius (``rho_curve``).

``sharpness.sam``, ``sharpness.adaptive_worst``, ``sharpness.adaptive_average`` (ρ) and
``sharpness.keskar`` (ε) report the sharpness at multiples of their radius: ascending, through
the headline value exactly at the measure's own radius, which the sweep leaves unchanged. On a
small trained network the SAM curve is non-decreasing in ρ, as the worst case over a larger
ball is (Foret et al. 2021, eq. 1).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
import torch
from torch import nn

from genscope import analyze
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import Dataset, from_arrays
from genscope.measures.context import AnalysisOptions, MeasureContext
from genscope.measures.registry import get_measure
from genscope.measures.sharpness import build_objective, parse_sweep
from genscope.perturb import worst_case
from tests import cases

RADIUS = {
    "sharpness.sam": "rho",
    "sharpness.adaptive_worst": "rho",
    "sharpness.adaptive_average": "rho",
    "sharpness.keskar": "epsilon",
}
OPTIONS = AnalysisOptions(dtype="float64")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Dataset]:
    """A ReLU MLP fitted to its 20 examples (a minimum: positive sharpness at every radius)."""
    case = cases.relu_mlp()
    opt = torch.optim.Adam(case.model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(case.model(case.x), case.y).backward()
        opt.step()
    case.model.eval()
    data = from_arrays(case.id, case.x, case.y, case.x, case.y, num_classes=case.num_classes)
    return case.model, data


def _run(model: nn.Module, data: Dataset, measure_id: str, **params: Any) -> tuple[float, dict]:
    result = analyze(model, data, [measure_id], params={measure_id: params}, options=OPTIONS)
    entry = result.measures[measure_id]
    assert entry.status == "ok", entry.details
    assert entry.value is not None
    return entry.value, entry.details


@pytest.mark.parametrize("measure_id", sorted(RADIUS))
def test_the_curve_passes_through_the_value_at_the_measures_radius(
    trained: tuple[nn.Module, Dataset], measure_id: str
) -> None:
    model, data = trained
    value, details = _run(model, data, measure_id)
    curve = details["rho_curve"]
    radius = float(get_measure(measure_id).defaults()[RADIUS[measure_id]])
    assert curve["radius"] == RADIUS[measure_id]
    assert curve["multiples"] == [0.25, 0.5, 1.0, 2.0]
    assert curve["rho"] == [m * radius for m in curve["multiples"]]
    assert curve["rho"] == sorted(curve["rho"])
    assert len(curve["value"]) == len(curve["stderr"]) == len(curve["rho"])
    assert curve["value"][curve["multiples"].index(1.0)] == value  # exactly, same draws
    assert curve["evaluated"] == 3
    # the sweep leaves the headline unchanged
    alone, without = _run(model, data, measure_id, sweep="")
    assert alone == value and "rho_curve" not in without


def test_sam_value_is_the_worst_case_ascent_at_rho(trained: tuple[nn.Module, Dataset]) -> None:
    """The headline is the projected-ascent worst case of genscope.perturb at ρ, as before the
    sweep existed: the sweep's extra radii do not touch it."""
    model, data = trained
    value, details = _run(model, data, "sharpness.sam", rho=0.1, steps=10)
    ctx = MeasureContext(LoadedModel(model, "module", sha256="x"), data, OPTIONS)
    objective, theta, _ = build_objective(ctx, 1024, 128)
    expected = worst_case(objective, theta, None, 0.1, "l2", 10, batch=0).increase
    assert value == expected
    assert details["num_grad"] == 10  # the headline's own work
    assert details["rho_curve"]["num_grad"] == 3 * 10  # three more radii, one batch


def test_sam_curve_is_non_decreasing_on_a_trained_net(
    trained: tuple[nn.Module, Dataset],
) -> None:
    model, data = trained
    _, details = _run(model, data, "sharpness.sam", rho=0.05, sweep="0,0.25,0.5,1,2,4")
    values = details["rho_curve"]["value"]
    assert details["rho_curve"]["rho"][0] == 0.0 and values[0] == 0.0
    assert all(b >= a for a, b in pairwise(values)), values
    assert values[-1] > 0


def test_a_radius_of_zero_gives_one_point(trained: tuple[nn.Module, Dataset]) -> None:
    model, data = trained
    value, details = _run(model, data, "sharpness.keskar", epsilon=0.0)
    curve = details["rho_curve"]
    assert curve["rho"] == [0.0] and curve["value"] == [value] == [0.0]
    assert curve["evaluated"] == 0 and curve["num_grad"] == 0


def test_sweep_parameter_is_parsed_and_bounded(trained: tuple[nn.Module, Dataset]) -> None:
    assert parse_sweep(" 4,1 ,0.5, 4", "m") == [0.5, 1.0, 4.0]
    assert parse_sweep("2", "m") == [1.0, 2.0]
    assert parse_sweep(" ", "m") == []
    model, data = trained
    for bad in ("a,b", "-1", "nan", ",".join(str(i) for i in range(20))):
        report = analyze(model, data, ["sharpness.sam"], params={"sharpness.sam": {"sweep": bad}})
        entry = report.measures["sharpness.sam"]
        assert entry.status == "failed" and entry.error is not None
        assert (
            entry.error["code"] == "bad_parameter"
            and "sharpness.sam.sweep" in entry.error["message"]
        ), (bad, entry.error)
