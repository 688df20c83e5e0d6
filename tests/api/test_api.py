"""The HTTP API as a whole (interfaces.md §4), on SQLite and PostgreSQL: importing it needs no
torch, settings refuse bad values, the OpenAPI document lists every route and its errors, and every
error answers one JSON shape. Each route module's own tests are in tests/api/test_<route>.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_api_does_not_import_torch() -> None:
    code = (
        "import sys, backend.main; app = backend.main.create_app(); app.openapi(); "
        "import backend.api.deps, backend.crud, backend.queue, worker.celery_app; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_settings_refuse_bad_configuration(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from backend.core.config import Settings

    with pytest.raises(ValidationError, match="MAX_UPLOAD_MB"):
        Settings(data_dir=tmp_path, max_upload_mb=0)
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(
            data_dir=tmp_path, task_time_limit=100, task_soft_time_limit=50, visibility_timeout=100
        )
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(data_dir=tmp_path, database_url="mysql://x")
    with pytest.raises(ValidationError, match="BROKER_URL"):
        Settings(data_dir=tmp_path, broker_url="kafka://x")
    defaults = Settings(data_dir=tmp_path)
    assert defaults.sqlalchemy_url == f"sqlite:///{tmp_path / 'genscope.sqlite'}"
    assert defaults.celery_broker_url.startswith("sqla+sqlite:///")
    assert defaults.max_upload_mb == 2048 and defaults.auth == "off"


def test_openapi_documents_routes_and_errors(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/checkpoints",
        "/api/datasets",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/comparisons",
        "/api/share/{token}",
        "/api/comparisons/{comparison_id}/share",
        "/api/health",
    ):
        assert path in paths, path
    for path, ops in paths.items():
        if not path.startswith("/api"):
            continue
        for method, op in ops.items():
            if path != "/api/health":
                assert "500" in op["responses"], (method, path)
    upload = paths["/api/checkpoints"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "413" in upload["responses"]
    assert {"RunCreate", "RunPublic", "RunsPublic", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )


def test_unexpected_error_is_500_without_traceback(make_client: Any) -> None:
    from fastapi.testclient import TestClient

    from backend.api.deps import get_blobs

    client = make_client()
    app = client.app

    def broken() -> None:
        raise RuntimeError("secret internals")

    app.dependency_overrides[get_blobs] = broken
    with TestClient(app, raise_server_exceptions=False) as raw:
        answer = raw.get("/api/runs")
    assert answer.status_code == 500
    assert answer.json() == {
        "code": "internal_error",
        "message": "internal server error",
        "detail": None,
    }
    assert "secret" not in answer.text
    del app.dependency_overrides[get_blobs]


def test_json_errors_have_one_format(client: Any) -> None:
    for answer in (
        client.get("/api/runs/x"),
        client.get("/api/nothing-here"),
        client.post("/api/runs", content=b"{", headers={"content-type": "application/json"}),
    ):
        body = answer.json()
        assert set(body) == {"code", "message", "detail"}, body
    assert json.loads(client.get("/api/runs/x").text)["code"] == "not_found"
