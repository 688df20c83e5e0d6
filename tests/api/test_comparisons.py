"""``/api/comparisons`` (backend/api/routes/comparisons.py): creating, reading and listing
comparisons, their share links (created, revoked, created again) and their study, on SQLite and
PostgreSQL. Reading a shared comparison is ``/api/share`` (tests/api/test_share.py)."""

from __future__ import annotations

from typing import Any

from tests.conftest import upload_checkpoint


def test_comparisons_and_share_links(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    runs = [
        client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": d}).json()["id"]
        for d in ("moons", "linear")
    ]
    created = client.post("/api/comparisons", json={"run_ids": runs, "title": "two"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["shared"] and body["share_url"] and body["url"].endswith(f"/compare/{body['id']}")
    token = body["share_url"].rsplit("/", 1)[-1]
    assert len(token) >= 32  # >= 128 bits, URL-safe
    shared = client.get(f"/api/share/{token}")
    assert shared.status_code == 200
    # the runs in the comparison's order, without their ids (anonymous readers get no ids)
    assert [r["dataset"] for r in shared.json()["runs"]] == ["moons", "linear"]
    assert all("id" not in r for r in shared.json()["runs"])
    assert client.get(f"/api/comparisons/{body['id']}").json()["share_url"] is None
    revoked = client.delete(f"/api/comparisons/{body['id']}/share")
    assert revoked.status_code == 200 and revoked.json()["revoked"] == 1
    assert client.get(f"/api/share/{token}").status_code == 404
    assert client.get("/api/share/" + "x" * 43).status_code == 404
    assert client.get(f"/api/comparisons/{body['id']}").json()["shared"] is False
    again = client.post(f"/api/comparisons/{body['id']}/share").json()
    assert client.get(f"/api/share/{again['share_url'].rsplit('/', 1)[-1]}").status_code == 200
    bad = client.post("/api/comparisons", json={"run_ids": ["nope"]})
    assert bad.status_code == 404
    assert client.post("/api/comparisons", json={"run_ids": []}).status_code == 422


def test_list_comparisons_and_study_runs_without_reports(
    client: Any, tiny_checkpoint: bytes
) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    run = client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons"}).json()["id"]
    first = client.post("/api/comparisons", json={"run_ids": [run], "title": "first"}).json()
    second = client.post("/api/comparisons", json={"run_ids": [run], "title": "second"}).json()
    listed = client.get("/api/comparisons", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    ids = [c["id"] for c in listed.json()["data"]]
    assert ids.index(second["id"]) < ids.index(first["id"])  # newest first
    assert listed.json()["count"] >= 2
    page = client.get("/api/comparisons", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["count"] == listed.json()["count"]
    # a queued run has no report yet: the study ranks nothing, and says it read no report
    study = client.get(f"/api/comparisons/{first['id']}/study")
    assert study.status_code == 200, study.text
    body = study.json()
    assert body["schema"] == "genscope.study/1"
    assert body["n_reports"] == 0 and body["measures"] == [] and body["ranking"] == []
    assert client.get("/api/comparisons/nope/study").status_code == 404
