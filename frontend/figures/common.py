"""Reading a report (plain dicts, schema ``genscope.report/1``): its measures, metrics and
numbers.

A measure's entry is read by the detail names its schema declares (``Measure.result`` in
:mod:`genscope.measures`). A detail that is absent or null was not recorded (the measure was
skipped with a ``reason``, or a value was not finite): no figure, or a gap. A detail of another
shape than declared is a bug of the report and raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Report = Mapping[str, Any]


def num(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (null, NaN, ±inf, booleans, text).

    >>> num(2), num(None), num(float("nan")), num(True)
    (2.0, None, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (for the report's optional blocks)."""
    return value if isinstance(value, Mapping) else {}


def numbers(values: Any) -> list[float | None]:
    """A declared numeric array as floats, ``None`` where an entry is null or not finite.

    Raises:
        TypeError: ``values`` is not an array (the report departs from its schema).
    """
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"expected an array of numbers, got {type(values).__name__}")
    return [num(v) for v in values]


def measures_of(report: Report | None) -> dict[str, dict[str, Any]]:
    """The report's measure entries (an empty dict when there are none; a measure the engine
    could not serialise is ``null`` and left out)."""
    if not isinstance(report, Mapping):
        return {}
    return {k: v for k, v in mapping(report.get("measures")).items() if isinstance(v, dict)}


def measure(report: Report | None, mid: str) -> dict[str, Any] | None:
    """One measure's entry when the report has it and it did not fail."""
    m = measures_of(report).get(mid)
    if m is None or m.get("status", "ok") not in ("ok", None):
        return None
    return m


def metric(report: Report | None, key: str) -> float | None:
    """A metric of the report (``train_error``/``test_error`` from the accuracy)."""
    metrics = mapping(report.get("metrics")) if isinstance(report, Mapping) else {}
    value = num(metrics.get(key))
    if value is None and key in ("train_error", "test_error"):
        acc = num(metrics.get(key.replace("error", "accuracy")))
        value = None if acc is None else 1.0 - acc
    return value


def missing_reason(entry: Any) -> str:
    """Why a measure shows no value, in one line: not computed, failed (its error), skipped
    (its ``reason``), or computed with no finite value (its ``reason``).

    >>> missing_reason(None), missing_reason({"status": "skipped", "reason": "needs init"})
    ('not computed in this run', 'skipped: needs init')
    """
    if not isinstance(entry, Mapping):
        return "not computed in this run"
    status = entry.get("status", "ok") or "ok"
    err = mapping(entry.get("error"))
    why = str(entry.get("reason") or err.get("message") or err.get("code") or "")
    if status == "failed":
        return f"failed: {why}" if why else "failed"
    if status == "skipped":
        return f"skipped: {why}" if why else "skipped"
    return why or "no finite value"
