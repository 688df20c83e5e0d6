"""A default that no other web page can drive (backend/core/exposure.py): loopback only with auth
off, a Host allow-list against DNS rebinding, same-origin state changes and the dashboard's CSRF
token. Refused requests store nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backend.core.exposure import UnsafeExposure, check_exposure, csrf_token, is_loopback
from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint
from tests.worker.procs import free_port, port_open

OWN = "http://testserver"


def _fresh_checkpoint() -> bytes:
    return safetensors_bytes(mlp_state(seed=int.from_bytes(os.urandom(4), "little")))


def _stored(client: Any, data: bytes) -> bool:
    sha = hashlib.sha256(data).hexdigest()
    return any(c["sha256"] == sha for c in client.get("/api/checkpoints").json()["data"])


def _tmp_files(client: Any) -> set[Path]:
    tmp = Path(client.settings.blob_dir) / "tmp"
    return set(tmp.iterdir()) if tmp.is_dir() else set()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": OWN},
        {"Origin": "http://testserver.evil.example"},
    ],
    ids=["origin", "null-origin", "referer", "fetch-cross-site", "fetch-same-site", "lookalike"],
)
def test_cross_site_uploads_are_refused_and_store_nothing(client: Any, headers: dict) -> None:
    data = _fresh_checkpoint()
    before = _tmp_files(client)
    answer = upload_checkpoint(client, data, headers={**headers, "X-CSRF-Token": "guess"})
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "cross_origin"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"  # headers on refusals too
    assert not _stored(client, data) and _tmp_files(client) <= before


def test_browser_changes_need_the_pages_csrf_token(client: Any) -> None:
    data = _fresh_checkpoint()
    missing = upload_checkpoint(client, data, headers={"Origin": OWN})
    assert missing.status_code == 403 and missing.json()["code"] == "csrf_failed"
    wrong = upload_checkpoint(client, data, headers={"Origin": OWN, "X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403 and not _stored(client, data)
    token = csrf_token(client.settings)
    page = client.get("/").text
    assert f'<meta name="csrf-token" content="{token}">' in page
    ok = upload_checkpoint(client, data, headers={"Origin": OWN, "X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    # clients that are not browsers (no Origin, Referer or Sec-Fetch-*) need no token
    assert upload_checkpoint(client, _fresh_checkpoint()).status_code == 201


def test_cross_site_deletes_and_runs_are_refused(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    evil = {"Origin": "https://evil.example"}
    body = {"checkpoint_id": ckpt, "dataset": "moons", "measures": "margin.output"}
    before = client.get("/api/runs").json()["count"]
    assert client.post("/api/runs", json=body, headers=evil).status_code == 403
    assert client.get("/api/runs").json()["count"] == before
    comparison = client.delete("/api/comparisons/0123456789abcdef0123456789abcdef", headers=evil)
    assert comparison.status_code == 403


def test_rebinding_host_is_refused(client: Any) -> None:
    answer = client.get("/api/runs", headers={"Host": "attacker.example"})
    assert answer.status_code == 400 and answer.json()["code"] == "bad_host"
    assert client.get("/", headers={"Host": "attacker.example:8000"}).status_code == 400
    assert client.get("/api/runs", headers={"Host": "localhost:8000"}).status_code == 200


def test_default_hosts_are_loopback_and_the_public_url(make_client: Any) -> None:
    public = make_client(allowed_hosts="", public_url="https://genscope.lab.example")
    assert public.get("/api/health").status_code == 400  # "testserver" is not on the list
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000", "genscope.lab.example"):
        assert public.get("/api/health", headers={"Host": host}).status_code == 200, host
    anything = make_client(allowed_hosts="*")
    assert anything.get("/api/health", headers={"Host": "any.example"}).status_code == 200


def test_with_tokens_the_bearer_token_is_the_credential(make_client: Any) -> None:
    from backend import crud
    from backend.core.db import session_scope

    client = make_client(auth="tokens")
    with session_scope(client.settings.sqlalchemy_url) as session:
        _user, token = crud.create_user(session, name=f"exposure-{os.urandom(4).hex()}")
    headers = {"Authorization": f"Bearer {token}", "Origin": OWN}
    assert upload_checkpoint(client, _fresh_checkpoint(), headers=headers).status_code == 201
    evil = {**headers, "Origin": "https://evil.example"}
    assert upload_checkpoint(client, _fresh_checkpoint(), headers=evil).status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org", "10.0.0.1"])
def test_listening_beyond_loopback_needs_tokens_or_the_loud_setting(host: str) -> None:
    from backend.core.config import Settings

    with pytest.raises(UnsafeExposure, match="GENSCOPE_AUTH=tokens"):
        check_exposure(host, Settings(auth="off"))
    check_exposure(host, Settings(auth="tokens"))
    check_exposure(host, Settings(auth="off", insecure_allow_remote_without_auth=True))


def test_serve_on_all_interfaces_with_auth_off_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env["GENSCOPE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "genscope.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unsafe_exposure" in proc.stderr
    assert "GENSCOPE_INSECURE_ALLOW_REMOTE_WITHOUT_AUTH" in proc.stderr
    assert not port_open(port) and not (tmp_path / "data").exists()  # refused before anything


def test_csrf_secret_is_never_empty_or_half_written(tmp_path: Path) -> None:
    """A secret file left empty or short (a crash, a full disk) is replaced, never trusted: an
    empty token would let a browser change things without one."""
    from backend.core import exposure
    from backend.core.config import Settings

    settings = Settings(data_dir=tmp_path)
    (tmp_path / "csrf-secret").write_text("")
    exposure._csrf_cache.clear()
    token = csrf_token(settings)
    assert len(token) >= exposure.MIN_TOKEN_CHARS
    assert (tmp_path / "csrf-secret").read_text() == token
    assert (tmp_path / "csrf-secret").stat().st_mode & 0o777 == 0o600
    exposure._csrf_cache.clear()
    assert csrf_token(settings) == token  # another process reads the same token
    assert [p.name for p in tmp_path.iterdir()] == ["csrf-secret"]  # no temporary file left
