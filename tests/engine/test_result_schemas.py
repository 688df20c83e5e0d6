"""Every registered measure's result conforms to its declared schema (genscope.measures.schema).

Every measure runs on tiny trained models (an MLP with BatchNorm on moons, a LeNet on digits,
and a bias-free ReLU MLP for the homogeneous branch of ``margin.homogeneous``) and its report
entry is checked with ``check_details``: no undeclared key, no wrong kind, every per-example
array with labels of the same length. Per-example labels follow the sample the measure used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from genscope import analyze
from genscope.analysis import STRICT_SCHEMA_ENV, conform
from genscope.io.datasets import from_arrays
from genscope.io.zoo import build_model
from genscope.measures.context import AnalysisOptions
from genscope.measures.registry import Measure, all_measures
from genscope.measures.schema import SchemaDeparture, check_details
from genscope.report import MeasureResult
from tests import cases

N = 24
OPTIONS = AnalysisOptions(dtype="float64", hessian_samples=N, margin_samples=N, batch_size=64)
NETS = {
    "mlp_bn": (
        "mlp",
        {"input_dim": 2, "widths": [6, 5], "num_classes": 2, "batchnorm": True},
        "moons",
    ),
    "cnn": (
        "lenet",
        {"in_channels": 1, "input_size": 8, "num_classes": 10, "padding": "same"},
        "digits",
    ),
}
#: Cheaper settings for the slow measures; the schema does not depend on them.
FAST = {
    "sharpness.pacbayes_flatness": {"depth": 4, "max_draws": 16},
    "sharpness.pacbayes_mag_flatness": {"depth": 4, "max_draws": 16},
    "bound.pacbayes_sharpness": {"depth": 4, "max_draws": 16},
    "margin.robust": {"linf_depth": 4, "linf_steps": 5, "max_iter": 20},
    "hessian.density": {"probes": 2},
    "ggn.density": {"probes": 2},
}


def _params(other: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in all_measures():
        given = {p.name: str(other) for p in m.params if p.checkpoint}
        known = {p.name for p in m.params}
        given.update({k: v for k, v in FAST.get(m.id, {}).items() if k in known})
        if given:
            out[m.id] = given
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The JSON report of every measure on each tiny model."""
    root = tmp_path_factory.mktemp("schemas")
    ids = [m.id for m in all_measures()]
    out = {}
    for name, (arch, config, dataset) in NETS.items():
        data = cases.first_examples(dataset, N)
        torch.manual_seed(0)
        module = cases.train_briefly(build_model(arch, config), data)
        torch.manual_seed(1)
        other = build_model(arch, config).eval()
        example = data.x_train[:2].float()
        program = torch.export.export(
            other, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
        )
        path = root / f"{name}_other.pt2"
        torch.export.save(program, str(path))
        report = analyze(module, data, ids, params=_params(path), options=OPTIONS)
        out[name] = json.loads(report.to_json())["measures"]
    case = cases.relu_mlp(bias=False)
    data = from_arrays(case.id, case.x, case.y, case.x, case.y, num_classes=case.num_classes)
    report = analyze(case.model, data, ["margin.homogeneous"], options=OPTIONS)
    out["homogeneous"] = json.loads(report.to_json())["measures"]
    return out


def _details(entry: dict[str, Any]) -> dict[str, Any]:
    reserved = {"value", "params", "seconds", "status", "error", "direction"}
    return {k: v for k, v in entry.items() if k not in reserved}


def test_every_measure_declares_its_result() -> None:
    for m in all_measures():
        assert m.result, f"{m.id} declares no result schema"
        names = [d.name for d in m.result]
        assert len(names) == len(set(names)), f"{m.id} declares a key twice"
        for d in m.result:
            assert d.help, f"{m.id}.{d.name} has no help"
            if d.per == "example" and d.name != "labels":
                assert d.labels, f"{m.id}.{d.name} is per example without labels"


def test_the_test_session_is_strict() -> None:
    import os

    assert os.environ.get(STRICT_SCHEMA_ENV) == "1"


def test_every_measure_conforms_on_tiny_models(reports: dict[str, dict[str, Any]]) -> None:
    specs = {m.id: m for m in all_measures()}
    for net, measures in reports.items():
        for mid, entry in measures.items():
            assert entry["status"] == "ok", f"{net} {mid}: {entry.get('error')}"
            problems = check_details(mid, specs[mid].result, _details(entry))
            assert problems == [], f"{net}: {problems}"
            assert "schema_problems" not in entry, f"{net} {mid}"
    assert set(reports["mlp_bn"]) == set(specs), "every registered measure ran"
    assert reports["homogeneous"]["margin.homogeneous"]["homogeneous"] is True


def test_per_example_values_carry_the_labels_of_their_sample(
    reports: dict[str, dict[str, Any]],
) -> None:
    labels = cases.first_examples("digits", N).y_train.tolist()
    cnn = reports["cnn"]
    for mid in ("margin.output", "margin.all_layer", "margin.normalized", "margin.hidden"):
        assert cnn[mid]["labels"] == labels, mid
        assert len(cnn[mid]["values"]) == len(labels), mid
        assert cnn[mid]["sample"]["split"] == "train"
    assert cnn["margin.robust"]["labels"] == labels
    assert len(cnn["margin.robust"]["l2"]["values"]) == len(labels)
    assert cnn["smoothness.input"]["labels"] == labels
    # margin.output's per-class rows are the values split by these labels
    out = cnn["margin.output"]
    for row in out["per_class"]:
        mine = [v for v, y in zip(out["values"], out["labels"], strict=True) if y == row["class"]]
        assert row["count"] == len(mine)
    homogeneous = reports["homogeneous"]["margin.homogeneous"]
    case = cases.relu_mlp(bias=False)
    with torch.no_grad():
        logits = case.model(case.x)
    true = logits.gather(1, case.y[:, None]).squeeze(1)
    margins = true - logits.scatter(1, case.y[:, None], float("-inf")).max(1).values
    order = torch.sort(margins.double()).indices
    assert homogeneous["labels"] == case.y[order].tolist()


def test_a_departure_raises_when_strict_and_is_recorded_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = Measure("test.schema", "metrics", lambda _c, _p: {"value": 1.0})
    result = MeasureResult(m.id, 1.0, {}, 0.0, {"undeclared": 1})
    with pytest.raises(SchemaDeparture, match="test.schema.undeclared is not declared"):
        conform(m, result)
    monkeypatch.setenv(STRICT_SCHEMA_ENV, "0")
    kept = conform(m, MeasureResult(m.id, 1.0, {}, 0.0, {"undeclared": 1}))
    assert kept.details["schema_problems"] == ["test.schema.undeclared is not declared"]
    assert kept.details["undeclared"] == 1
