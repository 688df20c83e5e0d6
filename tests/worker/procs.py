"""Real processes for the worker and fault tests: ``genscope worker`` / ``genscope serve``
processes, and private Redis and PostgreSQL servers that a test may stop and restart.

Every class here owns its process group and cleans up in ``stop`` (idempotent); fixtures call it
in their teardown so that a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# A run of several seconds with fine-grained progress: a 201 x 201 loss-surface slice.
SLOW_MEASURES = ["margin.output", "landscape.slice_2d"]
SLOW_PARAMS = {"landscape.slice_2d": {"points": 201}}
# Short leases and frequent recovery passes, so that lost runs are found within seconds.
FAST = {
    "lease_seconds": 2.0,
    "recovery_interval_seconds": 1.0,
    "progress_interval_seconds": 0.05,
    "requeue_grace_seconds": 3.0,
    "torch_threads": 1,  # the test machine is small and shared
}


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the group's leader (a warm shutdown stops its children), SIGKILL the whole group
    after ``grace`` seconds, and whatever is left of it in any case."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def settings_env(settings: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without GENSCOPE_* variables, then ``settings`` as GENSCOPE_*
    variables, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env.update(
        {
            f"GENSCOPE_{k.upper()}": str(v)
            for k, v in settings.model_dump().items()
            if v is not None and k != "analysis_defaults"
        }
    )
    env.update(extra or {})
    return env


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

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        _stop_group(self.proc)
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Service:
    """The API (an in-process ``TestClient``) and worker processes on one database, blob store
    and broker."""

    client: Any
    settings: Any
    data_dir: Path
    db_url: str
    fast: dict[str, Any]
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, env: dict[str, str] | None = None, **overrides: Any) -> Worker:
        """A worker with the service's settings, ``overrides`` and extra environment."""
        settings = make_settings(self.data_dir, self.db_url, **{**self.fast, **overrides})
        worker = Worker(settings_env(settings, env), self.logs / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker


@contextmanager
def open_service(
    tmp_path: Path, db_url: str, broker_url: str, **overrides: Any
) -> Iterator[Service]:
    """A :class:`Service`; its workers are stopped on exit."""
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.main import create_app

    fast = {"broker_url": broker_url, **FAST, **overrides}
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, db_url, **fast)
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    service: Service | None = None
    try:
        with TestClient(app) as client:
            client.settings = settings  # type: ignore[attr-defined]
            service = Service(client, settings, data_dir, db_url, fast, tmp_path)
            yield service
    finally:
        for worker in service.workers if service else []:
            worker.stop()


def wait_run(
    client: Any,
    run_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    worker: Worker | None = None,
) -> dict[str, Any]:
    """Poll ``GET /api/runs/<id>`` until ``done(body)``; the worker's log is shown on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/runs/{run_id}", params={"report": "false"}).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck: {body}\n{worker.tail() if worker else ''}")
        time.sleep(0.1)


def finished(body: dict[str, Any]) -> bool:
    return body.get("status") in ("succeeded", "failed")


def submit(
    client: Any,
    ckpt: str,
    measures: list[str],
    params: dict[str, Any] | None = None,
    dataset: str = "moons",
) -> str:
    """``POST /api/runs``; returns the new run's id."""
    answer = client.post(
        "/api/runs",
        json={"checkpoint_id": ckpt, "dataset": dataset, "measures": measures, "params": params},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


class RedisServer:
    """A private ``redis-server`` without persistence: stopping it loses every message."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.log),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 15, f"redis on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: Redis shuts down without saving (no save points, no AOF)."""
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None


class PostgresCluster:
    """A private PostgreSQL 15 cluster in a temporary directory owned by ``postgres``.

    initdb refuses to run as root, so the cluster is created and run with ``runuser -u
    postgres``; the socket goes to the same directory (``-k``) and TCP listens on 127.0.0.1 only.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="genscope-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "server.log"

    @staticmethod
    def unavailable() -> str | None:
        """Why a private cluster cannot be made here, or None."""
        if os.geteuid() != 0:
            return "creating a PostgreSQL cluster as another user needs root"
        if shutil.which("runuser") is None:
            return "runuser is not installed"
        if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
            return f"initdb/pg_ctl not found in {PG_BIN}"
        return None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}\n{done.stderr}")

    def init(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
            )

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class ApiServer:
    """``genscope serve --no-worker`` as a real process (uvicorn) on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genscope.cli",
                "serve",
                "--no-worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"the API exited:\n{self.tail()}")
            return port_open(self.port)

        wait_until(ready, timeout, "the API to listen")

    def stop(self) -> None:
        _stop_group(self.proc, grace=10)
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]
