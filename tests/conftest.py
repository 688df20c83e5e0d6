"""Shared fixtures of the service tests (tests/api, tests/worker).

* ``db_url`` is parametrised over SQLite and PostgreSQL: the PostgreSQL case creates a fresh
  database ``genscope_test_<random>`` on 127.0.0.1:5432 for the test session and drops it at the
  end (the case is skipped, with the reason, only when no server answers).
* ``client`` is a FastAPI ``TestClient`` on an app whose settings are swapped with
  ``app.dependency_overrides`` (auth off); ``make_client`` builds others (auth on, tiny limits).
* ``redis_url`` is a database of its own on a private ``redis-server`` (started on a free port
  for the test session, without persistence, stopped at the end): tests never touch a Redis
  they did not start. Skipped only when ``redis-server`` is not installed.
* tiny checkpoint files are written by the tests themselves (numpy + safetensors).
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DATABASES = 16  # redis-server's default number of databases
MOONS_MLP = {"input_dim": 2, "widths": [8], "num_classes": 2}
os.environ.setdefault("GENSCOPE_STRICT_SCHEMA", "1")  # a result off its declared schema raises


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the session, dropped at the end."""
    try:
        admin = _pg_admin()
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
    name = f"genscope_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from backend.core.db import dispose_engines

        dispose_engines()
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def isolated_db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for one test (worker tests: no runs left by other tests)."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'isolated.sqlite'}"
        return
    try:
        admin = _pg_admin()
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
    name = f"genscope_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from backend.core.db import get_engine

        get_engine(url).dispose()
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """The database URL of the parametrised backend (one database per session and backend)."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'genscope.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def data_dir(db_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"genscope-data-{db_backend}")


def make_settings(data_dir: Path, db_url: str, **overrides: Any) -> Any:
    from backend.core.config import Settings

    # TestClient addresses requests to "testserver"
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "allowed_hosts": "testserver,localhost,127.0.0.1",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_client(data_dir: Path, db_url: str) -> Iterator[Callable[..., Any]]:
    """Build a TestClient with settings overrides (``auth="tokens"``, ``max_upload_mb``...)."""
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.main import create_app

    opened: list[Any] = []

    def build(**overrides: Any) -> Any:
        settings = make_settings(data_dir, db_url, **overrides)
        app = create_app()
        app.dependency_overrides[get_settings] = lambda: settings
        client = TestClient(app)
        client.__enter__()
        client.settings = settings  # type: ignore[attr-defined]
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    """The API with auth off (the embedded default), on the parametrised database."""
    return make_client()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private ``redis-server`` for the test session (free port, no persistence)."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from tests.worker.procs import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    server.next_db = 0  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> Iterator[str]:
    """A database of the private Redis for one test (databases are taken in turn; a database
    is emptied when the test that used it ends: only that test wrote there)."""
    import redis

    db = redis_server.next_db % REDIS_DATABASES
    redis_server.next_db += 1
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    yield url
    conn = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        conn.flushdb()  # the private server's database this test was given
    finally:
        conn.close()


def mlp_state(
    input_dim: int = 2, width: int = 8, num_classes: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """A zoo ``mlp`` state dict (one hidden layer) with seeded float32 weights."""
    rng = np.random.default_rng(seed)
    return {
        "layers.0.weight": rng.normal(size=(width, input_dim)).astype(np.float32),
        "layers.0.bias": rng.normal(size=(width,)).astype(np.float32),
        "layers.2.weight": rng.normal(size=(num_classes, width)).astype(np.float32),
        "layers.2.bias": rng.normal(size=(num_classes,)).astype(np.float32),
    }


def safetensors_bytes(state: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(state)


def upload_checkpoint(
    client: Any,
    data: bytes,
    *,
    arch: str | None = "mlp",
    config: dict[str, Any] | None = None,
    name: str = "tiny.safetensors",
    headers: dict[str, str] | None = None,
) -> Any:
    form: dict[str, str] = {}
    if arch:
        form["arch"] = arch
        form["arch_config"] = json.dumps(config if config is not None else MOONS_MLP)
    return client.post(
        "/api/checkpoints",
        files={"file": (name, io.BytesIO(data), "application/octet-stream")},
        data=form,
        headers=headers or {},
    )


@pytest.fixture
def tiny_checkpoint() -> bytes:
    """A tiny moons MLP (2 -> 8 -> 2) as safetensors bytes."""
    return safetensors_bytes(mlp_state(seed=0))
