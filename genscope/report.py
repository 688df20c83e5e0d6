"""The analysis report, schema ``genscope.report/1`` (interfaces.md §3).

A :class:`Report` is what ``genscope analyze`` writes and what the service stores. JSON never
carries NaN or infinity: non-finite numbers are written as ``null``, and a measure whose value is
not finite says why in ``reason``.

A measure's details (the keys beside ``value``) follow the result schema its ``@measure``
declares (:mod:`genscope.measures.schema`); :func:`genscope.analysis.run_measure` checks every
result against it before it reaches the report, and a result that departs lists how in
``schema_problems``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "genscope.report/1"

METRIC_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "generalization_gap")


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, arrays and numpy scalars to plain JSON values; non-finite floats to None."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return to_jsonable(item())
    raise TypeError(f"cannot put a {type(obj).__name__} into a report")


def nonfinite_reason(value: float | None) -> str | None:
    """Why a value is missing from JSON: ``nan``, ``inf`` or ``-inf``; None when it is finite."""
    if value is None or math.isfinite(value):
        return None
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


@dataclass
class MeasureResult:
    """One measure's answer: its headline ``value``, the parameters used, time, and details."""

    id: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok" or "failed"
    error: dict[str, Any] | None = None
    direction: str | None = None  # "higher_is_better" | "lower_is_better" | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": to_jsonable(self.value),
            "params": to_jsonable(self.params),
            "seconds": round(float(self.seconds), 6),
            "status": self.status,
        }
        if self.direction:
            out["direction"] = self.direction
        reason = nonfinite_reason(self.value)
        if reason and "reason" not in self.details:
            out["reason"] = f"value is {reason}"
        if self.error is not None:
            out["error"] = to_jsonable(self.error)
        for key, val in self.details.items():
            if key in out:
                raise ValueError(f"measure {self.id}: detail key {key!r} clashes with a report key")
            out[key] = to_jsonable(val)
        return out

    @classmethod
    def from_dict(cls, measure_id: str, data: dict[str, Any]) -> MeasureResult:
        reserved = {"value", "params", "seconds", "status", "error", "direction"}
        return cls(
            id=measure_id,
            value=data.get("value"),
            params=dict(data.get("params") or {}),
            seconds=float(data.get("seconds") or 0.0),
            details={k: v for k, v in data.items() if k not in reserved},
            status=data.get("status", "ok"),
            error=data.get("error"),
            direction=data.get("direction"),
        )


@dataclass
class Report:
    """A whole analysis: model, data, metrics, measures, and the settings that produced it."""

    model: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]
    measures: dict[str, MeasureResult] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": to_jsonable(self.model),
            "data": to_jsonable(self.data),
            "metrics": to_jsonable(self.metrics),
            "settings": to_jsonable(self.settings),
            "measures": {mid: res.to_dict() for mid, res in self.measures.items()},
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        problems = validate_report(data)
        if problems:
            raise ValueError("not a genscope report: " + "; ".join(problems))
        return cls(
            model=data["model"],
            data=data["data"],
            metrics=data["metrics"],
            measures={k: MeasureResult.from_dict(k, v) for k, v in data["measures"].items()},
            settings=data.get("settings", {}),
            schema=data["schema"],
        )

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def validate_report(data: Any) -> list[str]:
    """Check a decoded report against schema ``genscope.report/1``; return the problems found."""
    if not isinstance(data, dict):
        return ["the report is not a JSON object"]
    problems: list[str] = []
    if data.get("schema") != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("model", "data", "metrics", "measures"):
        if not isinstance(data.get(key), dict):
            problems.append(f"{key!r} is missing or not an object")
    if problems:
        return problems
    for key in ("format", "sha256", "num_params", "layers"):
        if key not in data["model"]:
            problems.append(f"model.{key} is missing")
    for layer in data["model"].get("layers") or []:
        if not {"name", "kind", "shape"} <= set(layer):
            problems.append(f"model.layers entry {layer!r} lacks name/kind/shape")
    for key in ("name", "sha256", "n_train", "n_test", "num_classes"):
        if key not in data["data"]:
            problems.append(f"data.{key} is missing")
    for key in METRIC_KEYS:
        if key not in data["metrics"]:
            problems.append(f"metrics.{key} is missing")
        elif not _is_number_or_null(data["metrics"][key]):
            problems.append(f"metrics.{key} is not a number or null")
    for mid, res in data["measures"].items():
        if not isinstance(res, dict):
            problems.append(f"measures.{mid} is not an object")
            continue
        for key in ("value", "params", "seconds"):
            if key not in res:
                problems.append(f"measures.{mid}.{key} is missing")
        if not _is_number_or_null(res.get("value")):
            problems.append(f"measures.{mid}.value is not a number or null")
    return problems
