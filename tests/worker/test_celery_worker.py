"""Real ``genscope worker`` (Celery) processes over the embedded transport and over Redis.

upload -> run -> succeeded -> report readable; progress moves; kill -9 mid-run -> the run is
completed by the next worker (never duplicated, never stuck) or fails once its attempts are used
up; a lost broker message -> the run is re-sent by recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint
from tests.worker.procs import SLOW_MEASURES, SLOW_PARAMS, Worker, open_service, submit, wait_run

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(
    request: pytest.FixtureRequest,
    isolated_db_url: str,
    db_backend: str,
    tmp_path: Path,
) -> Iterator[tuple[Any, Callable[..., Worker]]]:
    """The API client and a worker factory sharing a fresh database, blobs and broker.

    SQLite runs with the embedded broker (the ``genscope serve`` default); PostgreSQL with Redis
    (the docker-compose deployment), a private ``redis-server`` started by the tests.
    """
    if db_backend == "sqlite":
        broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    else:
        broker = str(request.getfixturevalue("redis_url"))
    with open_service(tmp_path, isolated_db_url, broker) as svc:
        yield svc.client, svc.start_worker


_wait = wait_run
_submit = submit


def test_worker_runs_an_analysis_end_to_end(service: Any) -> None:
    client, start = service
    worker = start()
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=10))).json()["id"]
    run_id = _submit(client, ckpt, ["margin.output", "complexity.params"])
    body = _wait(client, run_id, lambda b: b["status"] in ("succeeded", "failed"), 120, worker)
    assert body["status"] == "succeeded", (body, worker.tail())
    assert body["progress"] == 1.0 and body["attempts"] == 1 and body["worker_id"]
    report = client.get(f"/api/runs/{run_id}").json()["report"]
    assert report["schema"] == "genscope.report/1"
    assert set(report["measures"]) == {"margin.output", "complexity.params"}
    assert report["measures"]["margin.output"]["status"] == "ok"
    assert len(report["measures"]["margin.output"]["values"]) == report["data"]["n_train"]
    health = client.get("/api/health").json()
    assert health["workers"], health  # the worker's heartbeat is visible


def test_kill9_mid_run_then_the_next_worker_completes_it(
    service: Any,
) -> None:
    client, start = service
    worker = start()
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=11))).json()["id"]
    run_id = _submit(client, ckpt, SLOW_MEASURES, SLOW_PARAMS)
    seen: list[float] = []

    def moving(body: dict[str, Any]) -> bool:
        seen.append(body["progress"])
        assert body["status"] in ("queued", "running"), "the run ended before it could be killed"
        return body["status"] == "running" and body["progress"] > 0.2

    body = _wait(client, run_id, moving, 120, worker)
    assert 0.0 < body["progress"] < 1.0 and seen == sorted(seen)  # progress moves, never back
    worker.kill9()
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "running"
    second = start()
    body = _wait(client, run_id, lambda b: b["status"] in ("succeeded", "failed"), 120, second)
    assert body["status"] == "succeeded", (body, second.tail())
    assert body["attempts"] == 2
    assert sorted(r["measure_id"] for r in body["results"]) == sorted(SLOW_MEASURES)


def test_kill9_fails_the_run_once_attempts_are_used_up(
    service: Any,
) -> None:
    client, start = service
    worker = start(max_attempts=1)
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=12))).json()["id"]
    run_id = _submit(client, ckpt, SLOW_MEASURES, SLOW_PARAMS)
    _wait(client, run_id, lambda b: b["status"] == "running", 120, worker)
    worker.kill9()
    second = start(max_attempts=1)
    body = _wait(client, run_id, lambda b: b["status"] in ("succeeded", "failed"), 60, second)
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"


def test_lost_broker_message_is_resent(service: Any, db_backend: str, tmp_path: Path) -> None:
    client, start = service
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=13))).json()["id"]
    run_id = _submit(client, ckpt, ["margin.output"])
    # the broker loses its messages (a restart without persistence)
    if db_backend == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "broker.sqlite") as conn:
            conn.execute("DELETE FROM kombu_message")
    else:
        import redis

        # this test's own database on the session's private redis-server (conftest.redis_url)
        conn = redis.Redis.from_url(client.settings.broker_url)
        try:
            conn.flushdb()
        finally:
            conn.close()
    worker = start()
    body = _wait(client, run_id, lambda b: b["status"] in ("succeeded", "failed"), 120, worker)
    assert body["status"] == "succeeded", (body, worker.tail())
