"""Real ``genscope worker`` (Celery) processes over the embedded transport and over Redis.

upload -> run -> succeeded -> report readable; progress moves; kill -9 mid-run -> the run is
completed by the next worker (never duplicated, never stuck) or fails once its attempts are used
up; a lost broker message -> the run is re-sent by recovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, mlp_state, safetensors_bytes, upload_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# A run of several seconds with fine-grained progress: a 201 x 201 loss-surface slice.
SLOW_MEASURES = ["margin.output", "landscape.slice_2d"]
SLOW_PARAMS = {"landscape.slice_2d": {"points": 201}}

pytestmark = pytest.mark.e2e


class Worker:
    """One ``genscope worker`` process group, its log kept in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genscope.cli",
                "worker",
                "--queues",
                "cpu",
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def service(
    request: pytest.FixtureRequest,
    isolated_db_url: str,
    db_backend: str,
    tmp_path: Path,
) -> Iterator[tuple[Any, Callable[..., Worker]]]:
    """The API client and a worker factory sharing a fresh database, blobs and broker.

    SQLite runs with the embedded broker (the ``genscope serve`` default); PostgreSQL with Redis
    (the docker-compose deployment).
    """
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.main import create_app

    if db_backend == "sqlite":
        broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    else:
        broker = str(request.getfixturevalue("redis_url"))
    fast = {
        "broker_url": broker,
        "lease_seconds": 2.0,
        "recovery_interval_seconds": 1.0,
        "progress_interval_seconds": 0.05,
        "requeue_grace_seconds": 3.0,
        "torch_threads": 1,  # the test machine is small and shared
    }
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, isolated_db_url, **fast)
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    workers: list[Worker] = []

    def start(**overrides: Any) -> Worker:
        worker_settings = make_settings(data_dir, isolated_db_url, **{**fast, **overrides})
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
        env.update(
            {
                f"GENSCOPE_{k.upper()}": str(v)
                for k, v in worker_settings.model_dump().items()
                if v is not None and k != "analysis_defaults"
            }
        )
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    with TestClient(app) as client:
        client.settings = settings  # type: ignore[attr-defined]
        yield client, start
        for worker in workers:
            worker.stop()


def _wait(
    client: Any,
    run_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    worker: Worker | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/runs/{run_id}", params={"report": "false"}).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck: {body}\n{worker.tail() if worker else ''}")
        time.sleep(0.1)


def _submit(
    client: Any, ckpt: str, measures: list[str], params: dict[str, Any] | None = None
) -> str:
    answer = client.post(
        "/api/runs",
        json={"checkpoint_id": ckpt, "dataset": "moons", "measures": measures, "params": params},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


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

        redis.Redis.from_url(client.settings.broker_url).flushdb()
    worker = start()
    body = _wait(client, run_id, lambda b: b["status"] in ("succeeded", "failed"), 120, worker)
    assert body["status"] == "succeeded", (body, worker.tail())
