"""The report: schema genscope.report/1, JSON without NaN, round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from genscope.report import MeasureResult, Report, to_jsonable, validate_report


def _report() -> Report:
    return Report(
        model={"format": "module", "sha256": "ab", "num_params": 3, "layers": []},
        data={"name": "d", "sha256": "cd", "n_train": 2, "n_test": 0, "num_classes": 2},
        metrics=dict.fromkeys(
            ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "generalization_gap")
        ),
        measures={
            "a": MeasureResult(
                "a", float("nan"), {"k": 1}, 0.5, {"values": torch.tensor([1.0, math.inf])}
            ),
            "b": MeasureResult("b", 2.0, {}, 0.1, {"quantiles": {"p50": 2.0}}),
        },
    )


def test_non_finite_numbers_become_null_with_a_reason(tmp_path: Path) -> None:
    text = _report().to_json()
    data = json.loads(text)
    assert data["measures"]["a"]["value"] is None
    assert data["measures"]["a"]["reason"] == "value is nan"
    assert data["measures"]["a"]["values"] == [1.0, None]
    assert validate_report(data) == []


def test_round_trip(tmp_path: Path) -> None:
    path = _report().save(tmp_path / "r.json")
    again = Report.load(path)
    assert again.measures["b"].value == 2.0
    assert again.measures["b"].details["quantiles"] == {"p50": 2.0}
    assert again.to_dict()["measures"]["b"] == _report().to_dict()["measures"]["b"]


def test_validator_names_what_is_missing() -> None:
    data = _report().to_dict()
    del data["metrics"]["test_loss"]
    del data["model"]["layers"]
    problems = validate_report(data)
    assert "metrics.test_loss is missing" in problems and "model.layers is missing" in problems
    assert validate_report([]) == ["the report is not a JSON object"]


def test_to_jsonable_handles_tensors_and_numpy() -> None:
    import numpy as np

    out = to_jsonable({"t": torch.tensor([[1, 2]]), "n": np.float32(0.5), "s": (1, "x")})
    assert out == {"t": [[1, 2]], "n": 0.5, "s": [1, "x"]}
