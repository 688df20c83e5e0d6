"""Faults with real processes: workers SIGKILLed mid-measure again and again, the broker (a
private Redis) stopped and restarted with runs queued, the database (a private PostgreSQL
cluster) restarted under a running API, and a worker whose measures run out of memory.

The database is the source of truth (ARCHITECTURE.md): every run ends ``succeeded`` or
``failed`` with a reason, with exactly one set of result rows, never stuck.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.core.db import session_scope
from backend.models import MeasureResultRow
from genscope.measures.context import SIMULATED_MEMORY_CAP_ENV
from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint
from tests.worker.procs import (
    SLOW_MEASURES,
    SLOW_PARAMS,
    ApiServer,
    PostgresCluster,
    RedisServer,
    Service,
    finished,
    open_service,
    port_open,
    settings_env,
    submit,
    wait_run,
)

pytestmark = pytest.mark.e2e


def _result_rows(service: Service, run_id: str) -> int:
    with session_scope(service.db_url) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(MeasureResultRow)
                .where(MeasureResultRow.run_id == run_id)
            )
            or 0
        )


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Service]:
    """SQLite and the embedded broker (the ``genscope serve`` default)."""
    db_url = f"sqlite:///{tmp_path / 'genscope.sqlite'}"
    with open_service(tmp_path, db_url, f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}") as svc:
        yield svc


# --- 1. a worker SIGKILLed mid-measure several times in a row --------------------------------


def _kill_mid_measure(service: Service, run_id: str, attempt: int, **overrides: Any) -> None:
    """Start a worker, wait until it is inside the slow measure of attempt ``attempt``, kill -9."""
    worker = service.start_worker(**overrides)

    def inside_slow_measure(body: dict[str, Any]) -> bool:
        assert body["status"] in ("queued", "running"), (body, worker.tail())
        return (
            body["status"] == "running"
            and body["attempts"] == attempt
            and body["progress"] > 0.0
            and "landscape.slice_2d" in (body.get("message") or "")
        )

    wait_run(service.client, run_id, inside_slow_measure, 120, worker)
    worker.kill9()


def test_three_kills_mid_measure_then_the_run_succeeds_once(embedded: Service) -> None:
    service, kills = embedded, 3
    ckpt = upload_checkpoint(service.client, safetensors_bytes(mlp_state(seed=21))).json()["id"]
    run_id = submit(service.client, ckpt, SLOW_MEASURES, SLOW_PARAMS)
    for attempt in range(1, kills + 1):
        _kill_mid_measure(service, run_id, attempt, max_attempts=kills + 1)
        assert service.client.get(f"/api/runs/{run_id}").json()["status"] == "running"
    last = service.start_worker(max_attempts=kills + 1)
    body = wait_run(service.client, run_id, finished, 120, last)
    assert body["status"] == "succeeded", (body, last.tail())
    assert body["attempts"] == kills + 1
    assert sorted(r["measure_id"] for r in body["results"]) == sorted(SLOW_MEASURES)
    assert _result_rows(service, run_id) == len(SLOW_MEASURES)  # one set of results, no copies


@pytest.mark.slow
def test_more_kills_than_attempts_fail_the_run_as_worker_lost(embedded: Service) -> None:
    service, budget = embedded, 2
    ckpt = upload_checkpoint(service.client, safetensors_bytes(mlp_state(seed=22))).json()["id"]
    run_id = submit(service.client, ckpt, SLOW_MEASURES, SLOW_PARAMS)
    for attempt in range(1, budget + 1):
        _kill_mid_measure(service, run_id, attempt, max_attempts=budget)
    # the third kill never comes: the next worker's recovery finds the budget spent
    last = service.start_worker(max_attempts=budget)
    body = wait_run(service.client, run_id, finished, 60, last)
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost", body
    assert str(budget) in body["error"]["message"]
    assert body["attempts"] == budget and _result_rows(service, run_id) == 0


# --- 2. Redis stopped and restarted with runs queued ------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_with_runs_queued_loses_no_run(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'genscope.sqlite'}"
    with open_service(tmp_path, db_url, redis_server.url) as service:
        client = service.client
        worker = service.start_worker()
        wait_until_worker_seen(client, worker)
        ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=23))).json()["id"]
        # a few seconds of work: long enough to stop Redis while the worker is busy with it
        busy = submit(client, ckpt, SLOW_MEASURES, {"landscape.slice_2d": {"points": 141}})
        wait_run(client, busy, lambda b: b["status"] == "running", 60, worker)
        queued = [submit(client, ckpt, m) for m in (["margin.output"], ["complexity.params"])]
        for run_id in queued:  # the worker is busy: these wait in Redis
            assert client.get(f"/api/runs/{run_id}").json()["status"] == "queued"

        redis_server.stop()  # no persistence: the queued messages are gone
        assert not port_open(redis_server.port)
        # the API keeps answering; a run created now is stored queued, sent later by recovery
        assert client.get(f"/api/runs/{busy}").status_code == 200
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json()["broker"]["ok"] is False
        started = time.monotonic()
        during = submit(client, ckpt, ["margin.normalized"])
        assert time.monotonic() - started < 15
        assert client.get(f"/api/runs/{during}").json()["status"] == "queued"
        time.sleep(1.0)

        redis_server.start()  # same port, empty
        runs = [busy, *queued, during]
        for run_id in runs:
            body = wait_run(client, run_id, finished, 120, worker)
            assert body["status"] == "succeeded", (body, worker.tail())
            assert _result_rows(service, run_id) == len(body["results"]) > 0
        # the busy run was not cancelled by the outage: it finished in its first attempt
        assert client.get(f"/api/runs/{busy}").json()["attempts"] == 1
        assert worker.alive(), worker.tail()  # it survived the outage and reconnected
        assert client.get("/api/health").json()["broker"]["ok"] is True


def wait_until_worker_seen(client: Any, worker: Any, timeout: float = 60) -> None:
    """Wait for the worker's heartbeat in the health table (its consumer is up)."""
    deadline = time.monotonic() + timeout
    while not client.get("/api/health").json().get("workers"):
        if time.monotonic() > deadline or not worker.alive():
            raise AssertionError(f"the worker did not come up:\n{worker.tail()}")
        time.sleep(0.2)


# --- 3. PostgreSQL restarted under the API ----------------------------------------------------


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    reason = PostgresCluster.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def api_on_postgres(postgres_cluster: PostgresCluster, tmp_path: Path) -> Iterator[ApiServer]:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", postgres_cluster.url)
    server = ApiServer(settings_env(settings), tmp_path / "api.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_postgres_restart_under_the_api(
    api_on_postgres: ApiServer, postgres_cluster: PostgresCluster
) -> None:
    api = api_on_postgres
    with httpx.Client(base_url=api.url, timeout=30) as client:
        ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=24)))
        assert ckpt.status_code == 201, ckpt.text
        before = submit(client, ckpt.json()["id"], ["margin.output"])

        postgres_cluster.stop()
        for method, path, body in (
            ("GET", "/api/runs", None),
            ("GET", f"/api/runs/{before}", None),
            ("POST", "/api/runs", {"checkpoint_id": ckpt.json()["id"], "dataset": "moons"}),
        ):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text, api.tail())
            error = answer.json()
            assert set(error) == {"code", "message", "detail"}
            assert error["code"] == "database_unavailable", error
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json()["database"]["ok"] is False
        assert api.alive(), api.tail()

        postgres_cluster.start()
        # stale pooled connections are replaced (pool_pre_ping): the first request succeeds
        again = client.get(f"/api/runs/{before}")
        assert again.status_code == 200, (again.text, api.tail())
        assert again.json()["status"] == "queued"  # no worker here: the run waits, not lost
        after = submit(client, ckpt.json()["id"], ["complexity.params"])
        listed = client.get("/api/runs").json()
        assert {r["id"] for r in listed["data"]} == {before, after} and listed["count"] == 2


# --- 4. out of memory in a measure, in a worker ----------------------------------------------


def test_worker_out_of_memory_fails_that_measure_only(embedded: Service) -> None:
    service = embedded
    # a cap below one example: every forward pass of a measure runs out of memory
    worker = service.start_worker(env={SIMULATED_MEMORY_CAP_ENV: "0.000001"})
    ckpt = upload_checkpoint(service.client, safetensors_bytes(mlp_state(seed=25))).json()["id"]
    run_id = submit(service.client, ckpt, ["margin.output", "hessian.trace"])
    body = wait_run(service.client, run_id, finished, 120, worker)
    assert body["status"] == "succeeded", (body, worker.tail())
    results = {r["measure_id"]: r for r in body["results"]}
    assert results["margin.output"]["status"] == "ok"
    assert results["hessian.trace"]["status"] == "failed"
    report = service.client.get(f"/api/runs/{run_id}").json()["report"]
    failed = report["measures"]["hessian.trace"]
    assert failed["error"]["code"] == "out_of_memory"
    assert "256, 128, 64, 32, 16, 8, 4, 2, 1 examples" in failed["error"]["message"]
    assert report["measures"]["margin.output"]["status"] == "ok"
    assert _result_rows(service, run_id) == 2
