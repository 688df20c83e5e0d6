"""``/api/runs`` (backend/api/routes/runs.py): request validation (measures, parameters, datasets,
checkpoints, stray keys), creating, reading and listing runs, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import upload_checkpoint


def test_run_request_validation(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]

    def post(**body: Any) -> Any:
        return client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", **body})

    unknown = post(measures=["margin.nope"])
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_measure"
    stray = post(measures=["margin.output"], params={"bound.spectral": {}})
    assert stray.status_code == 422 and stray.json()["code"] == "bad_parameter"
    catalogue = client.get("/api/measures").json()
    assert catalogue["count"] >= 1 and "margins" in catalogue["groups"]
    assert all(m["forms"] for m in catalogue["data"])  # each declares the forms it takes
    with_int = next(
        (m, p) for m in catalogue["data"] for p in m["params"] if p["type"] == "int"
    )  # a measure with an integer parameter
    measure, param = with_int
    wrong_type = post(measures=[measure["id"]], params={measure["id"]: {param["name"]: "x"}})
    assert wrong_type.status_code == 422 and wrong_type.json()["code"] == "bad_parameter"
    no_such = post(measures=[measure["id"]], params={measure["id"]: {"zzz": 1}})
    assert no_such.status_code == 422 and "zzz" in no_such.json()["message"]
    bad_dataset = client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": "nope"})
    assert bad_dataset.status_code == 422 and bad_dataset.json()["code"] == "bad_dataset"
    missing = client.post("/api/runs", json={"checkpoint_id": "0" * 32, "dataset": "moons"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    extra = post(colour="blue")
    assert extra.status_code == 422 and extra.json()["code"] == "validation_error"
    assert extra.json()["detail"]


def test_create_read_and_list_runs(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    created = []
    for measures in (None, ["margins"], "margin.output"):
        answer = client.post(
            "/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", "measures": measures}
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["status"] == "queued" and body["progress"] == 0.0 and body["report"] is None
        created.append(body)
    assert created[0]["measures"] == ["margin.output"]
    assert "margin.output" in created[1]["measures"] and len(created[1]["measures"]) > 1
    one = client.get(f"/api/runs/{created[0]['id']}")
    assert one.status_code == 200 and one.json()["id"] == created[0]["id"]
    page = client.get("/api/runs", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["count"] >= 3
    assert page["data"][0]["id"] == created[-1]["id"]  # newest first
    queued = client.get("/api/runs", params={"status": "queued", "limit": 500}).json()
    assert {r["id"] for r in created} <= {r["id"] for r in queued["data"]}
    assert client.get("/api/runs/unknown").status_code == 404
    assert client.get("/api/runs", params={"limit": 0}).status_code == 422
