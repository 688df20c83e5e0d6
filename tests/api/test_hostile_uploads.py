"""Hostile uploads through the HTTP API, on SQLite and PostgreSQL: one representative file per
category of the corpus (tests/hostile.py; the engine tests cover every case). Each refused upload
answers 4xx ``{code, message, detail}``, leaves no row, no blob and nothing in the blob store's
``tmp/``, runs no payload, and the service keeps answering. Out-of-range measure parameters are
refused at request time with 422 and create no run."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from backend.blobs import BlobStore
from tests.conftest import upload_checkpoint
from tests.hostile import Case, corpus, write_case

#: Files that ran code or escaped the budgets before the allow-lists and the sandbox, also: a
#: higher-order operator and an I/O operator in a .pt2, TorchScript in a spelling a regex
#: missed, pickle imports behind the memo, npz members without the .npy suffix, nested JSON.
ISSUE_14 = (
    "pt2-hop-cond",
    "pt2-op-aten.from_file.default",
    "ts-from-file-spelling-2",
    "pt-memo-MEMOIZE-LONG_BINGET-os-system",
    "pt-memo-BINPUT-BINGET-builtins-exec",
    "npz-unsuffixed-member-32gib",
    "npz-non-array-member",
    "pt2-json-nested-200000",
)
REPRESENTATIVES = [c for c in corpus() if c.api or c.id in ISSUE_14]


def test_every_issue_14_case_is_in_the_corpus() -> None:
    assert set(ISSUE_14) <= {c.id for c in corpus()}


def _state(client: Any) -> dict[str, Any]:
    """What a refused upload must leave unchanged: rows, stored objects, temp files."""
    blob_dir = Path(client.settings.blob_dir)
    checkpoints = client.get("/api/checkpoints", params={"limit": 500}).json()
    datasets = client.get("/api/datasets").json()
    return {
        "checkpoints": sorted(c["id"] for c in checkpoints["data"]),
        "checkpoint_count": checkpoints["count"],
        "datasets": sorted(d["id"] for d in datasets["data"]),
        "objects": sorted(str(p) for p in (blob_dir / "objects").rglob("*") if p.is_file()),
        "tmp": BlobStore(blob_dir).tmp_files(),
    }


def _upload(client: Any, case: Case, data: bytes) -> Any:
    if case.kind == "dataset":
        return client.post(
            "/api/datasets", files={"file": (case.filename, io.BytesIO(data), "application/zip")}
        )
    return upload_checkpoint(
        client, data, arch=case.arch, config=case.arch_config, name=case.filename
    )


@pytest.mark.parametrize("case", REPRESENTATIVES, ids=[c.id for c in REPRESENTATIVES])
def test_hostile_upload_is_refused_and_leaves_nothing(
    client: Any, case: Case, tmp_path: Path
) -> None:
    path, marker = write_case(case, tmp_path)
    before = _state(client)
    answer = _upload(client, case, path.read_bytes())
    assert answer.status_code == case.api_status, answer.text
    body = answer.json()
    assert set(body) >= {"code", "message", "detail"} and body["message"]
    expected = "bad_request" if case.api_status == 400 else case.code
    assert body["code"] == expected, body
    assert "Traceback" not in answer.text
    assert not marker.exists(), "a payload ran"
    assert _state(client) == before
    assert before["tmp"] == []
    assert client.get("/api/health").status_code == 200


def test_empty_files_are_refused_for_both_kinds(client: Any) -> None:
    before = _state(client)
    for route in ("/api/checkpoints", "/api/datasets"):
        answer = client.post(route, files={"file": ("empty.npz", io.BytesIO(b""))})
        assert answer.status_code == 400 and answer.json()["code"] == "bad_request", answer.text
    assert _state(client) == before


def test_an_arch_config_that_is_not_an_object_is_refused(
    client: Any, tiny_checkpoint: bytes
) -> None:
    """Refused by the service before any inspection (the absurd sizes are in the corpus run)."""
    before = _state(client)
    not_an_object = client.post(
        "/api/checkpoints",
        files={"file": ("w.safetensors", io.BytesIO(tiny_checkpoint))},
        data={"arch": "mlp", "arch_config": json.dumps([10**9])},
    )
    assert not_an_object.status_code == 422
    assert not_an_object.json()["code"] == "bad_architecture"
    assert _state(client) == before


BAD_PARAMS = [
    ("sharpness.sam", "rho", -0.5),
    ("hessian.density", "probes", 10**9),
    ("hessian.top_eigenvalues", "k", 10**9),
    ("hessian.top_eigenvalues", "k", True),
    ("hessian.top_eigenvalues", "k", "5x"),
    ("hessian.top_eigenvalues", "k", 2.5),
    ("hessian.top_eigenvalues", "tol", float("nan")),
    ("sharpness.sam", "rho", float("inf")),
    ("sharpness.sam", "samples", 10**400),
    ("margin.robust", "eps", "0.1," * 600),
    ("margin.all_layer", "batch_size", 10**9),
]


def test_out_of_range_parameters_are_refused_at_request_time(
    client: Any, tiny_checkpoint: bytes
) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint)
    assert ckpt.status_code == 201, ckpt.text
    runs_before = client.get("/api/runs", params={"limit": 500}).json()["count"]
    for measure_id, name, raw in BAD_PARAMS:
        body = {
            "checkpoint_id": ckpt.json()["id"],
            "dataset": "moons",
            "measures": [measure_id],
            "params": {measure_id: {name: raw}},
        }
        # json.dumps writes NaN/Infinity literals, as a careless client would
        answer = client.post(
            "/api/runs", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422, (measure_id, name, raw, answer.text)
        assert answer.json()["code"] in {"bad_parameter", "validation_error"}, answer.text
        assert "Traceback" not in answer.text
    assert client.get("/api/runs", params={"limit": 500}).json()["count"] == runs_before
    assert client.get("/api/health").status_code == 200


def test_k_beyond_the_parameter_count_fails_only_that_measure(
    client: Any, tiny_checkpoint: bytes
) -> None:
    """Only knowable at run time (42 parameters): the measure fails with bad_parameter, the run
    and the other measures complete."""
    from worker.tasks import execute_run

    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["margin.output", "hessian.top_eigenvalues"],
            "params": {"hessian.top_eigenvalues": {"k": 50}},
        },
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    assert execute_run(client.settings, run_id, "task-hostile-k") == "succeeded"
    body = client.get(f"/api/runs/{run_id}").json()
    by_id = {r["measure_id"]: r for r in body["results"]}
    assert by_id["margin.output"]["status"] == "ok"
    assert by_id["hessian.top_eigenvalues"]["status"] == "failed"
    assert by_id["hessian.top_eigenvalues"]["error_code"] == "bad_parameter"
    error = body["report"]["measures"]["hessian.top_eigenvalues"]["error"]
    assert "number of parameters (42)" in error["message"]
