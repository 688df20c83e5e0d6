"""Auth on (``GENSCOPE_AUTH=tokens``): bearer tokens, per-user isolation, share links stay open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from backend import crud
from backend.core.db import session_scope
from backend.core.security import hash_token
from backend.models import ApiToken
from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _user(settings: Any, name: str) -> dict[str, str]:
    with session_scope(settings.sqlalchemy_url) as session:
        _user, token = crud.create_user(session, name=name)
    return {"Authorization": f"Bearer {token}"}


def test_tokens_required_and_hashed(make_client: Any) -> None:
    client = make_client(auth="tokens")
    assert client.get("/api/runs").status_code == 401
    answer = client.get("/api/runs", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    headers = _user(client.settings, f"carol-{os.getpid()}-{id(client)}")
    assert client.get("/api/runs", headers=headers).status_code == 200
    token = headers["Authorization"].split()[1]
    with session_scope(client.settings.sqlalchemy_url) as session:
        stored = [t.token_hash for t in session.query(ApiToken).all()]
    assert hash_token(token) in stored and token not in stored
    anonymous = client.get("/api/health")  # health stays open, without the details
    assert anonymous.status_code == 200
    assert set(anonymous.json()["database"]) == {"ok"} and anonymous.json()["workers"] == []
    assert set(
        client.get("/api/health", headers={"Authorization": "Bearer nope"}).json()["database"]
    ) == {"ok"}
    assert "url" in client.get("/api/health", headers=headers).json()["database"]


def test_users_cannot_see_each_other(make_client: Any) -> None:
    client = make_client(auth="tokens")
    suffix = f"{os.getpid()}-{id(client)}"
    alice, bob = _user(client.settings, f"alice-{suffix}"), _user(client.settings, f"bob-{suffix}")
    data = safetensors_bytes(mlp_state(seed=7))
    ckpt = upload_checkpoint(client, data, headers=alice)
    assert ckpt.status_code == 201, ckpt.text
    ckpt_id = ckpt.json()["id"]
    run = client.post(
        "/api/runs", json={"checkpoint_id": ckpt_id, "dataset": "moons"}, headers=alice
    ).json()
    comparison = client.post(
        "/api/comparisons", json={"run_ids": [run["id"]]}, headers=alice
    ).json()
    for path in (
        f"/api/checkpoints/{ckpt_id}",
        f"/api/runs/{run['id']}",
        f"/api/comparisons/{comparison['id']}",
    ):
        assert client.get(path, headers=alice).status_code == 200
        other = client.get(path, headers=bob)
        assert other.status_code == 404 and other.json()["code"] == "not_found", path
    assert (
        client.delete(f"/api/comparisons/{comparison['id']}/share", headers=bob).status_code == 404
    )
    steal = client.post(
        "/api/runs", json={"checkpoint_id": ckpt_id, "dataset": "moons"}, headers=bob
    )
    assert steal.status_code == 404
    assert (
        client.post("/api/comparisons", json={"run_ids": [run["id"]]}, headers=bob).status_code
        == 404
    )
    assert run["id"] not in [r["id"] for r in client.get("/api/runs", headers=bob).json()["data"]]
    assert client.get("/api/checkpoints", headers=bob).json()["count"] == 0
    # bob's own upload of the same bytes is his own row
    mine = upload_checkpoint(client, data, headers=bob).json()
    assert mine["id"] != ckpt_id and mine["sha256"] == ckpt.json()["sha256"]
    # the share link needs no token and opens exactly that comparison
    token = comparison["share_url"].rsplit("/", 1)[-1]
    shared = client.get(f"/api/share/{token}")
    assert shared.status_code == 200 and shared.json()["id"] == comparison["id"]


def test_users_create_prints_a_token_once(make_client: Any, tmp_path: Path) -> None:
    client = make_client(auth="tokens")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env["GENSCOPE_DATA_DIR"] = str(client.settings.data_dir)
    env["GENSCOPE_DATABASE_URL"] = client.settings.sqlalchemy_url
    name = f"dave-{os.getpid()}-{id(client)}"
    cli = [sys.executable, "-m", "genscope.cli", "users"]
    proc = subprocess.run(
        [*cli, "create", name], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    assert len(token) >= 40
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = subprocess.run(
        [*cli, "create", name], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    revoke = subprocess.run(
        [*cli, "revoke", name], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert revoke.returncode == 0
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
