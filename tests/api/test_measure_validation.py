"""The API resolves measures with the registry's own functions over the measures' declarations:
the catalogue is the engine's, a request is accepted or refused as the CLI would, and none of it
needs torch or a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import upload_checkpoint

ROOT = Path(__file__).resolve().parents[2]

#: Run requests the engine refuses, each with the code it refuses them with.
REFUSED: list[tuple[Any, dict[str, Any], str]] = [
    (["margin.outptu"], {}, "unknown_measure"),
    ("margins,nope", {}, "unknown_measure"),
    (["margin.output"], {"nope.nothing": {"a": 1}}, "unknown_measure"),
    (["margin.output"], {"bound.spectral": {}}, "bad_parameter"),
    (["margin.output"], {"margin.output": {"zzz": 1}}, "bad_parameter"),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": "x"}}, "bad_parameter"),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": 0}}, "bad_parameter"),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": True}}, "bad_parameter"),
    (["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": 2.5}}, "bad_parameter"),
    (["hessian.trace"], {"hessian.trace": {"method": "exact"}}, "bad_parameter"),
    (["stability.sgd"], {"stability.sgd": {"trace": None}}, "bad_parameter"),
    (["sharpness.sam"], {"sharpness.sam": {"rho": "inf"}}, "bad_parameter"),
    (["landscape.interpolate"], {"landscape.interpolate": {"other": 3}}, "bad_parameter"),
]


def engine_error(measures: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The error the engine's registry raises for a request (torch and all modules loaded)."""
    from genscope.errors import GenScopeError
    from genscope.measures.registry import resolve_measures, resolve_params

    with pytest.raises(GenScopeError) as caught:
        resolve_params(resolve_measures(measures), params)
    return json.loads(json.dumps(caught.value.to_dict()))


def test_the_catalogue_is_the_engines(client: Any) -> None:
    from backend.schemas import MeasuresPublic
    from genscope.measures.registry import GROUPS, all_measures

    engine = [m.describe() for m in all_measures()]
    public = {"data": engine, "count": len(engine), "groups": ["all", *GROUPS]}
    expected = json.loads(MeasuresPublic.model_validate(public).model_dump_json())
    assert client.get("/api/measures").json() == expected


def test_run_requests_are_refused_with_the_engines_errors(
    client: Any, tiny_checkpoint: bytes
) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    for measures, params, code in REFUSED:
        body = {"checkpoint_id": ckpt, "dataset": "moons", "measures": measures, "params": params}
        answer = client.post("/api/runs", json=body)
        assert answer.status_code == 422, (measures, params, answer.text)
        expected = engine_error(measures, params)
        assert expected["code"] == code
        assert answer.json() == expected, (measures, params)


def test_accepted_parameters_are_stored_coerced(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["margins", "hessian.top_eigenvalues", "stability.sgd"],
            "params": {
                "hessian.top_eigenvalues": {"k": "7", "tol": "1e-3"},
                "stability.sgd": {"lr": None, "trace": "no"},
            },
        },
    )
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert run["params"] == {
        "hessian.top_eigenvalues": {"k": 7, "tol": 1e-3},
        "stability.sgd": {"lr": None, "trace": False},
    }  # only what was given: the engine fills in the defaults
    from genscope.measures.registry import resolve_measures

    expected = [m.id for m in resolve_measures(["margins", "hessian.top_eigenvalues"])]
    assert run["measures"] == [*expected, "stability.sgd"]


def test_checkpoint_parameters_are_the_declared_ones() -> None:
    from backend.catalogue import checkpoint_params
    from genscope.measures.registry import all_measures

    marked = {(m.id, p.name) for m in all_measures() for p in m.params if p.checkpoint}
    assert ("landscape.interpolate", "other") in marked
    given = {mid: {name: "a" * 32, "samples": 4} for mid, name in sorted(marked)}
    found = checkpoint_params(given)
    assert sorted((mid, name) for mid, name, _ in found) == sorted(marked)
    assert checkpoint_params({"landscape.interpolate": {"other": None}}) == []


#: Installed first in the child: torch and numpy cannot be imported, nor a process started.
BLOCKED = """
import importlib.abc, subprocess, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "numpy"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocked())
def no_process(*args, **kwargs):
    raise RuntimeError("a subprocess was started")
subprocess.Popen = no_process
"""


def test_the_api_validates_with_torch_blocked() -> None:
    requests = [[m, p] for m, p, _ in REFUSED] + [
        [["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": "7"}}]
    ]
    script = (
        BLOCKED
        + f"""
import json
from backend.catalogue import measure_catalogue, validate_measures
from backend.core.errors import ServiceError
out = []
for measures, params in json.loads({json.dumps(json.dumps(requests))}):
    try:
        out.append({{"ok": validate_measures(measures, params)}})
    except ServiceError as exc:
        out.append({{"error": exc.body()}})
print(json.dumps({{"catalogue": measure_catalogue(), "answers": out}}))
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    from genscope.measures.registry import all_measures

    assert child["catalogue"] == json.loads(json.dumps([m.describe() for m in all_measures()]))
    *refused, accepted = child["answers"]
    for (measures, params, _), answer in zip(REFUSED, refused, strict=True):
        assert answer == {"error": engine_error(measures, params)}
    assert accepted == {"ok": [["hessian.top_eigenvalues"], {"hessian.top_eigenvalues": {"k": 7}}]}
