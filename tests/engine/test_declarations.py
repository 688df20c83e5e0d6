"""The measure declarations read from source equal the registry, and need no torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from genscope.errors import GenScopeError
from genscope.measures.declared import (
    DeclarationError,
    DeferredCompute,
    declared_measures,
    read_declarations,
)
from genscope.measures.registry import (
    Measure,
    all_measures,
    get_measure,
    resolve_measures,
    resolve_params,
)
from genscope.measures.schema import Detail

FIELDS = [f.name for f in dataclasses.fields(Measure) if f.name != "compute"]


def test_every_declaration_equals_the_registry() -> None:
    runtime = {m.id: m for m in all_measures()}
    declared = declared_measures()
    assert sorted(declared) == sorted(runtime)
    for measure_id, engine in runtime.items():
        static = declared[measure_id]
        for name in FIELDS:  # id, group, params, direction, description, source, result...
            assert getattr(static, name) == getattr(engine, name), (measure_id, name)
        assert static.describe() == engine.describe(), measure_id
        assert isinstance(static.compute, DeferredCompute), measure_id
        assert static.compute.module == engine.compute.__module__, measure_id
    assert [m.id for m in all_measures(declared)] == [m.id for m in all_measures()]


def test_a_declared_measure_computes_with_the_registered_function() -> None:
    static = declared_measures()["margin.output"]
    assert get_measure("margin.output").compute is not static.compute
    # the deferred function imports the module and calls the registered one
    calls: list[Any] = []

    def recorded(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        calls.append((ctx, params))
        return {}

    engine = get_measure("margin.output")
    original = engine.compute
    object.__setattr__(engine, "compute", recorded)
    context: Any = "ctx"
    try:
        assert static.compute(context, {"a": 1}) == {}
    finally:
        object.__setattr__(engine, "compute", original)
    assert calls == [("ctx", {"a": 1})]


def _package(tmp_path: Path, **modules: str) -> Path:
    folder = tmp_path / "pkg"
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return folder


HEADER = """\
from __future__ import annotations
import torch
from torch import ones
from genscope.measures.registry import LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import Detail
"""


def test_a_new_module_is_read_with_what_declarations_use(tmp_path: Path) -> None:
    """A measure added in a module of its own is found: no list of measures to edit."""
    folder = _package(
        tmp_path,
        base=HEADER
        + """
SAMPLES = Param("samples", int, 10 ** 3, "examples", 1, 2 * 5_000_000)
AUTHOR = "Someone 2024"
def samples(default: int = 64, *, top: int = 100) -> Param:
    '''A samples parameter.'''
    return Param("samples", int, default, "examples", 1, top)
""",
        added=HEADER
        + """
from .base import AUTHOR, SAMPLES, samples
SHARED = (Param("k", int, 3, "neighbours", min=1, max=-(-9)),)
CURVE = Detail("curve", "array", "loss at each radius", per="point")

@measure(
    "test.added",
    group="sharpness",
    params=[*SHARED, samples(128, top=4096), Param("tol", float, 1e-3 / 2, "tolerance")],
    direction=LOWER_IS_BETTER,
    source=f"{AUTHOR}, eq. {2 + 1}; " + "appendix",
    cost="moderate",
    requires=["functional"],
    forms=("module", "state_dict"),
    result=(CURVE, Detail("radii", "array", per="point")),
)
def added(ctx, params):
    '''Loss over a ball.

    Longer text.'''
    return {"value": torch.zeros(()).item()}

AUTHOR = "rebound after the decorator"

@measure("test.defaults", group="margins", params=[SAMPLES, samples()])
def defaults(ctx, params):
    return {"value": None}
""",
    )
    found = read_declarations(folder, "pkg")
    added = found["test.added"]
    assert (added.group, added.direction, added.cost) == (
        "sharpness",
        "lower_is_better",
        "moderate",
    )
    assert added.description == "Loss over a ball."
    assert added.source == "Someone 2024, eq. 3; appendix"
    assert added.requires == frozenset({"functional"})
    assert added.forms == frozenset({"module", "state_dict"})
    assert [(p.name, p.default, p.max) for p in added.params] == [
        ("k", 3, 9),
        ("samples", 128, 4096),
        ("tol", 5e-4, None),
    ]
    assert [d.name for d in added.result] == ["curve", "radii"]
    defaults = found["test.defaults"]
    assert defaults.params[0].default == 1000 and defaults.params[0].max == 10_000_000
    assert defaults.params[1].default == 64 and defaults.description == ""
    assert defaults.forms == frozenset({"module", "state_dict", "program"}) and not defaults.result
    assert isinstance(added.compute, DeferredCompute) and added.compute.module == "pkg.added"


#: A module whose line 9 is the decorator under test.
BAD_MODULE = (
    HEADER
    + "def HELPER():\n    x = Param('a', int, 1)\n    return x\n"
    + "{decorator}\n"
    + "def fn(ctx, params):\n    return {{}}\n"
    + "LATER = 'x'\n"
)


@pytest.mark.parametrize(
    ("decorator", "says"),
    [
        ('@measure("t.x", group="margins", params=[torch.ones(1)])', "type Attribute"),
        ('@measure("t.x", group="margins", params=[ones(1)])', "imported from torch"),
        ('@measure("t.x", group="margins", source=open("f"))', "'open' is not bound"),
        ('@measure("t.x", group="margins", source=len("ab"))', "'len' is not bound"),
        ('@measure("t.x", group="margins", source=str.upper("ab"))', "Attribute"),
        (
            '@measure("t.x", group="margins", params=[HELPER()])',
            r"HELPER\(\) \(line 6 of bad.py\) is not one return",
        ),
        ('@measure("t.x", group="margins", cost=10 ** 10 ** 10)', "exponent"),
        ('@measure("t.x", group="margins", source=[x for x in "ab"])', "ListComp"),
        ('@measure("t.x", group="margins", source=LATER)', "'LATER' is not bound"),
        ('@measure("t.x", group="margins", source="a" * 3)', "arithmetic is on numbers"),
        ('@measure("t.x", group="nope")', "unknown group"),
        ('@measure("t.x", group="margins", colour="red")', "unexpected keyword"),
        ('@measure("t.x", group="margins", params=[Param("a", int)])', "missing"),
    ],
)
def test_what_cannot_be_read_statically_fails_naming_file_and_line(
    tmp_path: Path, decorator: str, says: str
) -> None:
    folder = _package(tmp_path, bad=BAD_MODULE.format(decorator=decorator))
    with pytest.raises(DeclarationError, match=says) as caught:
        read_declarations(folder, "pkg")
    assert "bad.py:9: " in str(caught.value)


def test_a_measure_registered_otherwise_is_refused(tmp_path: Path) -> None:
    folder = _package(
        tmp_path,
        sneaky=HEADER
        + "from genscope.measures.registry import Measure, register\n"
        + "register(Measure('t.hidden', 'margins', print))\n",
    )
    with pytest.raises(DeclarationError, match=r"sneaky.py:7: a measure registered other"):
        read_declarations(folder, "pkg")


def test_an_id_declared_twice_is_refused(tmp_path: Path) -> None:
    twice = HEADER + "".join(
        f"@measure('t.same', group='margins')\ndef f{i}(ctx, params):\n    return {{}}\n"
        for i in range(2)
    )
    with pytest.raises(DeclarationError, match="'t.same' twice"):
        read_declarations(_package(tmp_path, twice=twice), "pkg")


# --- without torch -----------------------------------------------------------------------------

#: Installed first in the child: importing torch or numpy fails there.
BLOCK = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "numpy"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocked())
"""

#: ``(measures, params)`` requests: accepted ones and refused ones.
REQUESTS: list[tuple[Any, dict[str, Any]]] = [
    (None, {}),
    ("margins", {}),
    (["hessian.top_eigenvalues", "all"], {"hessian.top_eigenvalues": {"k": "7", "tol": 1e-3}}),
    (["sharpness.sam"], {"sharpness.sam": {"rho": 0.1, "steps": 3.0, "batch_size": "16"}}),
    (["stability.sgd"], {"stability.sgd": {"lr": None, "trace": "no"}}),
    (["landscape.interpolate"], {"landscape.interpolate": {"split": "test"}}),
    (["margin.outptu"], {}),
    (["margin.output"], {"nope.nothing": {"a": 1}}),
    (["margin.output"], {"bound.spectral": {}}),
    (["margin.output"], {"margin.output": {"zzz": 1}}),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": "x"}}),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": 0}}),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": True}}),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": 2.5}}),
    (["sharpness.sam"], {"sharpness.sam": {"rho": float("nan")}}),
    (["hessian.trace"], {"hessian.trace": {"method": "exact"}}),
    (["landscape.interpolate"], {"landscape.interpolate": {"other": 3}}),
    (["stability.sgd"], {"stability.sgd": {"trace": None}}),
]


def outcome(measures: Any, params: dict[str, Any], known: Any = None) -> dict[str, Any]:
    """What the registry's functions make of one request: ids and values, or the error."""
    try:
        chosen = resolve_measures(measures, known)
        values = resolve_params(chosen, params, known)
    except GenScopeError as exc:
        return {"error": exc.to_dict()}
    return {"ids": [m.id for m in chosen], "params": values}


def test_the_declarations_validate_requests_with_torch_blocked() -> None:
    script = (
        BLOCK
        + f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from genscope.measures.declared import declared_measures
from genscope.measures.registry import all_measures
from test_declarations import REQUESTS, outcome
known = declared_measures()
listed = [m.describe() for m in all_measures(known)]
answers = [outcome(m, p, known) for m, p in REQUESTS]
loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "numpy"))
print(json.dumps({{"listed": listed, "answers": answers, "loaded": loaded}}))
"""
    )
    # the test module imports pytest and genscope only: importable in the blocked child
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["loaded"] == []
    assert child["listed"] == json.loads(json.dumps([m.describe() for m in all_measures()]))
    engine = [outcome(m, p) for m, p in REQUESTS]
    assert child["answers"] == json.loads(json.dumps(engine))
    accepted = [a for a in engine if "ids" in a]
    refused = [a["error"] for a in engine if "error" in a]
    assert len(accepted) == 6 and len(refused) == len(REQUESTS) - 6
    assert accepted[2]["params"]["hessian.top_eigenvalues"]["k"] == 7  # "7" coerced
    assert {e["code"] for e in refused} == {"unknown_measure", "bad_parameter"}


def test_result_schemas_are_declared_details() -> None:
    for m in declared_measures().values():
        assert all(isinstance(d, Detail) for d in m.result), m.id
