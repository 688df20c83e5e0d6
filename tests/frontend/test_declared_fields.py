"""Every field a figure or table builder reads is declared in its measure's result schema
(``Measure.result`` beside its ``@measure``; :mod:`genscope.measures.schema`).

Each builder runs on real engine reports whose measure entries record every key read; each
read is then looked up in the schema: a key of the entry (:data:`ENTRY_KEYS`), a declared
detail or a common one (:data:`genscope.measures.schema.COMMON`), and inside a detail that
declares its ``fields``, one of those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from frontend import figures as F
from genscope.measures.registry import all_measures
from genscope.measures.schema import COMMON, Detail
from tests.frontend.samples import named_runs, report

#: The keys of every measure's entry, written by the report itself (genscope/report.py).
ENTRY_KEYS = frozenset({"value", "params", "seconds", "status", "error", "direction"})

Path = tuple[str, ...]


class Recorded(dict):
    """A report object that logs the path of every key read from it (and from the objects
    inside it) into ``log``."""

    def __init__(self, data: dict[str, Any], path: Path, log: set[Path]) -> None:
        super().__init__({k: _wrap(v, (*path, str(k)), log) for k, v in data.items()})
        self._path, self._log = path, log

    def __getitem__(self, key: str) -> Any:
        self._log.add((*self._path, key))
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._log.add((*self._path, key))
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._log.add((*self._path, str(key)))
        return super().__contains__(key)


def _wrap(value: Any, path: Path, log: set[Path]) -> Any:
    if isinstance(value, dict):
        return Recorded(value, path, log)
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [_wrap(v, path, log) for v in value]  # rows of an array: one path for all
    return value


def _recorded(rep: dict[str, Any], log: set[Path]) -> dict[str, Any]:
    """``rep`` whose measure entries log their reads (the report's other blocks do not)."""
    return {**rep, "measures": {mid: _wrap(m, (mid,), log) for mid, m in rep["measures"].items()}}


def _undeclared(path: Path, schemas: dict[str, tuple[Detail, ...]]) -> str | None:
    """Why the read ``path`` (measure id, key, sub-keys...) is not declared; None when it is."""
    mid, key, *inner = path
    if mid not in schemas:
        return f"{mid} is not a registered measure"
    if key in ENTRY_KEYS:
        return None if not inner else f"{'.'.join(path)} reads inside an entry key"
    declared = {d.name: d for d in (*COMMON, *schemas[mid])}
    detail = declared.get(key)
    if detail is None:
        return f"{mid}.{key} is not declared"
    for sub in inner:
        if not detail.fields:
            return None  # an object whose keys are data (layer names, quantiles...)
        fields = {f.name: f for f in detail.fields}
        if sub not in fields:
            return f"{mid}.{key}: {sub!r} is not among its declared fields"
        detail = fields[sub]
    return None


RUN_BUILDERS: list[tuple[str, Callable[[dict], Any]]] = [
    *((fid, builder) for fid, _section, builder, _d in F.RUN_FIGURES),
    ("measure_rows", F.measure_rows),
    ("sharpness_rows", F.sharpness_rows),
    ("bound_rows", F.bound_rows),
    ("headline_scalars", F.headline_scalars),
]
COMPARE_BUILDERS: list[tuple[str, Callable[[list], Any]]] = [
    *((fid, builder) for fid, _section, builder, _d in F.COMPARE_FIGURES),
    ("scalar_table", F.scalar_table),
    ("gap_correlations", F.gap_correlations),
]


@pytest.fixture(scope="module")
def schemas() -> dict[str, tuple[Detail, ...]]:
    declared = {m.id: tuple(m.result) for m in all_measures()}
    missing = sorted(mid for mid, result in declared.items() if not result)
    if missing:
        pytest.skip(f"no result schema declared (Measure.result) for: {', '.join(missing)}")
    return declared


@pytest.mark.parametrize(("name", "builder"), RUN_BUILDERS, ids=[n for n, _ in RUN_BUILDERS])
def test_run_builders_read_only_declared_fields(
    name: str, builder: Callable[[dict], Any], schemas: dict[str, tuple[Detail, ...]]
) -> None:
    log: set[Path] = set()
    results = [builder(_recorded(report(r), log)) for r in ("moons_mlp", "digits_mlp")]
    assert any(r for r in results), f"{name} drew nothing from the real reports"
    problems = sorted({p for path in log if (p := _undeclared(path, schemas))})
    assert problems == []


@pytest.mark.parametrize(
    ("name", "builder"), COMPARE_BUILDERS, ids=[n for n, _ in COMPARE_BUILDERS]
)
def test_compare_builders_read_only_declared_fields(
    name: str, builder: Callable[[list], Any], schemas: dict[str, tuple[Detail, ...]]
) -> None:
    log: set[Path] = set()
    runs = [{**run, "report": _recorded(run["report"], log)} for run in named_runs(4)]
    assert builder(runs), f"{name} drew nothing from the real reports"
    problems = sorted({p for path in log if (p := _undeclared(path, schemas))})
    assert problems == []


def test_an_undeclared_read_is_caught(schemas: dict[str, tuple[Detail, ...]]) -> None:
    """The check itself: reads of names the engine never wrote are reported."""
    log: set[Path] = set()
    entry = _recorded(report("moons_mlp"), log)["measures"]["sharpness.sam"]
    entry.get("curve")
    assert entry["rho_curve"]["rho"]
    assert ("sharpness.sam", "rho_curve", "rho") in log
    assert _undeclared(("sharpness.sam", "curve"), schemas) == "sharpness.sam.curve is not declared"
    assert _undeclared(("margin.all_layer", "loads", "share"), schemas)
    assert _undeclared(("margin.all_layer", "loads", "mean_share"), schemas) is None
