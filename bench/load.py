"""Load benchmark of the service on loopback: read routes, streaming uploads, a queue drain.

One command starts a real stack in a temporary data directory — ``genscope serve --no-worker``
(one uvicorn process, auth on) and, when the queue is needed, ``genscope worker`` processes
(concurrency 1 each) — on a fresh database (a throwaway PostgreSQL database
``genscope_load_<random>``, or SQLite in the data directory) and broker (a private
``redis-server`` on a free port, without persistence, or the embedded SQLite transport), with
every read of an upload in the sandbox (``--sandbox bwrap``, the default) or not (``off``), then:

1. queue drain: N tiny runs (moons MLP 2-8-2, ``margin.output``, distinct seeds so that no run is
   answered from the cache) are queued with no worker running; two workers are started and the
   wall time until every run has finished is measured; every run must succeed exactly once
   (attempts, task ids, result rows in the database; ``received``/``succeeded`` lines in the
   workers' logs);
2. seeding: trained digits MLPs are uploaded through the API and 200 runs of them (each
   checkpoint with distinct seeds, eight cheap measures with per-example arrays and a spectral
   density) are computed by the same two workers; a comparison of some of them gets a share link;
3. upload load (workers stopped): U concurrent uploads of valid ~50 MB safetensors checkpoints
   (an MLP whose architecture matches, distinct contents, inspected by the service) while the API
   process's RSS is sampled every 50 ms; every upload must be stored (listed, blob present,
   sha256 equal);
4. read load: C concurrent clients for D seconds on the read routes (run list, run JSON with its
   report, run page HTML and its figure data, share page HTML and share JSON); every non-2xx
   answer or request past the timeout counts as an error. ``--clients 8,50`` runs one phase per
   count, in that order; after a phase with errors the bench waits for the API to answer again.

The load generators run in a separate process (``multiprocessing``, spawn) from the bench's
orchestration and from the server. Everything started is stopped at the end, the temporary
directory, the throwaway database and the private Redis server are removed, also on Ctrl-C.
The exit status is 0 only when every check passed.

    python bench/load.py --db postgresql --broker redis --out bench/RESULTS-load.md
    python bench/load.py --db sqlite --broker embedded --out bench/RESULTS-load.md
    python bench/load.py --smoke --db sqlite --broker embedded      # ~1 minute, for CI
    python bench/load.py --db postgresql --broker redis --sandbox off   # the sandbox's cost
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_HOST = "127.0.0.1"
READ_USER, DRAIN_USER = "bench-read", "bench-drain"
MOONS_MLP = {"input_dim": 2, "widths": [8], "num_classes": 2}
SEED_WIDTHS = ([32], [64], [128], [64, 64])
SEED_MEASURES = [
    "margin.output",
    "margin.normalized",
    "margin.hidden",
    "hessian.top_eigenvalues",
    "hessian.density",
    "complexity.spectral",
    "bound.spectral",
    "collapse.nc1",
]
SEED_PARAMS = {"hessian.density": {"steps": 20, "probes": 1}}
SMOKE_MEASURES = ["margin.output", "margin.hidden", "complexity.spectral"]
LABELS = {
    ("postgresql", "redis"): "PostgreSQL + Redis",
    ("sqlite", "embedded"): "SQLite + embedded broker",
    ("sqlite", "redis"): "SQLite + Redis",
    ("postgresql", "embedded"): "PostgreSQL + embedded broker",
}


# --------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """What one invocation measures (``--smoke`` shrinks every size)."""

    db: str
    broker: str
    smoke: bool
    clients: list[int]
    duration: float
    timeout: float
    client_procs: int
    seed_runs: int
    seed_checkpoints: int
    compare_runs: int
    uploads: int
    upload_mb: float
    drain_runs: int
    workers: int
    train_steps: int
    measures: list[str]
    out: Path | None
    logs: Path | None
    note: str
    command: str
    sandbox: str = "bwrap"

    @property
    def label(self) -> str:
        """The configuration's title."""
        label = LABELS[(self.db, self.broker)]
        return label if self.sandbox == "bwrap" else f"{label}, sandbox off"

    @property
    def key(self) -> str:
        """The marker of this configuration's section in the results file."""
        key = f"{self.db}+{self.broker}" + ("-smoke" if self.smoke else "")
        return key if self.sandbox == "bwrap" else f"{key}-nosandbox"

    @property
    def recovery_wait(self) -> float:
        """How long to wait for the API to answer again after a read phase with errors."""
        return 30.0 if self.smoke else 240.0


def parse_args(argv: list[str] | None = None) -> Config:
    """Command-line options; unset sizes take the full or the ``--smoke`` defaults."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--broker", choices=["embedded", "redis"], default="embedded")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a check that it all works")
    p.add_argument(
        "--clients",
        help="concurrent read clients; a comma-separated list runs one read phase each, in "
        "that order (50; smoke 5)",
    )
    p.add_argument("--duration", type=float, help="seconds of read load (60; smoke 3)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument("--seed-runs", type=int, help="stored runs for the read load (200; smoke 6)")
    p.add_argument("--compare-runs", type=int, help="runs in the shared comparison (6; smoke 2)")
    p.add_argument("--uploads", type=int, help="concurrent uploads (10; smoke 2)")
    p.add_argument("--upload-mb", type=float, help="size of each upload in MiB (50; smoke 5)")
    p.add_argument("--drain-runs", type=int, help="queued runs to drain (100; smoke 6)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (concurrency 1)")
    p.add_argument(
        "--sandbox",
        choices=["bwrap", "off"],
        default="bwrap",
        help="GENSCOPE_SANDBOX of the service (off: to measure the sandbox's cost)",
    )
    p.add_argument("--out", type=Path, help="markdown file to write this configuration's section")
    p.add_argument("--logs", type=Path, help="copy the service's logs into this folder")
    p.add_argument("--note", default="", help="a line added to the section (machine state)")
    a = p.parse_args(argv)
    smoke = a.smoke

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if smoke else full)

    shown = ["python", "bench/load.py", *(argv if argv is not None else sys.argv[1:])]
    return Config(
        db=a.db,
        broker=a.broker,
        smoke=smoke,
        clients=[int(c) for c in str(pick(a.clients, "50", "5")).split(",") if c.strip()],
        duration=pick(a.duration, 60.0, 3.0),
        timeout=a.timeout,
        client_procs=max(1, a.client_procs),
        seed_runs=pick(a.seed_runs, 200, 6),
        seed_checkpoints=2 if smoke else 4,
        compare_runs=pick(a.compare_runs, 6, 2),
        uploads=pick(a.uploads, 10, 2),
        upload_mb=pick(a.upload_mb, 50.0, 5.0),
        drain_runs=pick(a.drain_runs, 100, 6),
        workers=max(1, a.workers),
        train_steps=30 if smoke else 100,
        measures=SMOKE_MEASURES if smoke else SEED_MEASURES,
        out=a.out,
        logs=a.logs,
        note=a.note,
        command=shlex.join(shown),
        sandbox=a.sandbox,
    )


# --------------------------------------------------------------------------- the stack


def _die_with_parent() -> None:
    """In a child before exec: receive SIGTERM if the bench itself dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_rss(pid: int) -> int:
    """Resident set size of a process in bytes (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Stack:
    """The service's processes, data directory, database and broker; :meth:`close` undoes all."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tmp = Path(tempfile.mkdtemp(prefix="genscope-load-"))
        self.data_dir = self.tmp / "data"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg_name: str | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.tokens: dict[str, str] = {}
        self.database_url = f"sqlite:///{self.data_dir / 'genscope.sqlite'}"
        self.broker_url: str | None = None

    # -- resources ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the throwaway database and pick an empty Redis database, as configured."""
        if self.cfg.db == "postgresql":
            import psycopg

            name = f"genscope_load_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.pg_name = name
            self.database_url = PG_URL.format(name=name)
        if self.cfg.broker == "redis":
            self.broker_url = self.start_redis()

    def start_redis(self) -> str:
        """A private ``redis-server`` (free port, no persistence, stopped by :meth:`close`)."""
        import redis

        port = free_port()
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                REDIS_HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                "--logfile",
                str(self.tmp / "redis.log"),
            ],
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(host=REDIS_HOST, port=port, socket_timeout=1).ping():
                    return f"redis://{REDIS_HOST}:{port}/0"
            time.sleep(0.1)
        raise RuntimeError("the private redis-server did not answer in 30 s")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every service process: only this bench's GENSCOPE_* settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
        env.update(
            GENSCOPE_DATA_DIR=str(self.data_dir),
            GENSCOPE_DATABASE_URL=self.database_url,
            GENSCOPE_AUTH="tokens",
            GENSCOPE_MAX_UPLOAD_MB=str(max(2048, int(self.cfg.upload_mb * 2))),
            GENSCOPE_TORCH_THREADS="1",
            GENSCOPE_SANDBOX=self.cfg.sandbox,
            PYTHONUNBUFFERED="1",
        )
        if self.broker_url:
            env["GENSCOPE_BROKER_URL"] = self.broker_url
        env.update(extra)
        return env

    def settings_shown(self) -> dict[str, str]:
        """The settings as written to the results (paths and random names generalised)."""
        return {
            "GENSCOPE_DATABASE_URL": (
                PG_URL.format(name="genscope_load_<random>")
                if self.pg_name
                else "sqlite:///<data dir>/genscope.sqlite"
            ),
            "GENSCOPE_BROKER_URL": (
                f"redis://{REDIS_HOST}:<a free port>/0 (a private redis-server)"
                if self.broker_url
                else "(embedded: sqla+sqlite:///<data dir>/broker.sqlite)"
            ),
            "GENSCOPE_AUTH": "tokens",
            "GENSCOPE_MAX_UPLOAD_MB": self.env()["GENSCOPE_MAX_UPLOAD_MB"],
            "GENSCOPE_TORCH_THREADS": "1 (workers)",
            "GENSCOPE_SANDBOX": self.cfg.sandbox,
            "other settings": "defaults",
        }

    # -- processes ------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start ``python -m genscope.cli ARGS`` in its own session, output to ``<name>.log``."""
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "genscope.cli", *args],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run a ``genscope`` command to completion; its stdout."""
        proc = subprocess.run(
            [sys.executable, "-m", "genscope.cli", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"genscope {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def create_user(self, name: str) -> str:
        """A user and its token, the way ``genscope users create NAME`` does it."""
        token = self.cli("users", "create", name).strip().splitlines()[-1].strip()
        self.tokens[name] = token
        return token

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start_api(self) -> int:
        """``genscope serve --no-worker`` on a free port; its pid once /api/health answers."""
        self.port = free_port()
        proc = self.spawn("api", ["serve", "--no-worker", "--port", str(self.port)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}:\n{self.tail('api')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/api/health", timeout=2).status_code == 200:
                    return proc.pid
            time.sleep(0.2)
        raise RuntimeError(f"the API did not answer /api/health in 120 s:\n{self.tail('api')}")

    def start_workers(self, tag: str) -> list[subprocess.Popen[bytes]]:
        """``genscope worker --concurrency 1`` × ``cfg.workers`` on the cpu queue."""
        procs = []
        for i in range(1, self.cfg.workers + 1):
            name = f"worker{i}-{tag}"
            args = ["worker", "--queues", "cpu", "--concurrency", "1"]
            procs.append(self.spawn(name, [*args, "--hostname", f"bench{i}-{tag}@%h"]))
        return procs

    def stop(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM to the process's group (it and its children), SIGKILL after ``timeout``."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:  # a warm shutdown: the process stops its own children
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (pool children)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def stop_workers(self) -> None:
        """Stop every worker process."""
        for name in [n for n in self.procs if n.startswith("worker")]:
            self.stop(name)

    def log_text(self, name: str) -> str:
        """The output of process ``name`` so far."""
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a process's output."""
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def worker_logs(self) -> str:
        """Every worker's output, concatenated."""
        return "".join(self.log_text(p.stem) for p in sorted(self.tmp.glob("worker*.log")))

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process (the private Redis too), copy the logs if asked, drop the database."""
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name, timeout=20)
        if self.cfg.logs is not None:
            with contextlib.suppress(OSError):
                self.cfg.logs.mkdir(parents=True, exist_ok=True)
                for path in self.tmp.glob("*.log"):
                    shutil.copy(path, self.cfg.logs / path.name)
        with contextlib.suppress(Exception):
            from backend.core.db import dispose_engines

            dispose_engines()
        if self.pg_name is not None:
            try:
                import psycopg

                with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (self.pg_name,),
                    )
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}"')
                self.pg_name = None
            except Exception as exc:
                print(f"warning: could not drop database {self.pg_name}: {exc}", file=sys.stderr)
        if self.redis is not None:
            self.redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis.wait(timeout=10)
            if self.redis.poll() is None:
                self.redis.kill()
            self.redis = None
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def moons_checkpoint(path: Path) -> None:
    """The drain's tiny moons MLP 2-8-2 (seeded float32 weights)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file(
        {
            "layers.0.weight": rng.normal(size=(8, 2)).astype(np.float32),
            "layers.0.bias": rng.normal(size=(8,)).astype(np.float32),
            "layers.2.weight": rng.normal(size=(2, 8)).astype(np.float32),
            "layers.2.bias": rng.normal(size=(2,)).astype(np.float32),
        },
        str(path),
    )


def trained_checkpoints(folder: Path, count: int, steps: int) -> list[tuple[Path, dict[str, Any]]]:
    """Digits MLPs trained briefly (full-batch Adam, seeded), saved as safetensors."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from genscope.io.datasets import load_dataset
    from genscope.io.zoo import build_model

    torch.set_num_threads(1)
    data = load_dataset("digits")
    out = []
    for i in range(count):
        config = {"input_dim": 64, "widths": SEED_WIDTHS[i % len(SEED_WIDTHS)], "num_classes": 10}
        torch.manual_seed(i)
        model = build_model("mlp", config)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
            opt.step()
        path = folder / f"digits-mlp-{i}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
        out.append((path, config))
    return out


def big_checkpoint(path: Path, mib: float, seed: int) -> dict[str, Any]:
    """A valid zoo MLP 64-w-w-10 of about ``mib`` MiB of float32 weights (distinct per seed)."""
    import numpy as np
    from safetensors.numpy import save_file

    n = mib * 1024 * 1024 / 4
    width = int((-76 + (76**2 + 4 * (n - 10)) ** 0.5) / 2)  # w² + 76 w + 10 = n
    rng = np.random.default_rng(seed)

    def tensor(*shape: int) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    save_file(
        {
            "layers.0.weight": tensor(width, 64),
            "layers.0.bias": tensor(width),
            "layers.2.weight": tensor(width, width),
            "layers.2.bias": tensor(width),
            "layers.4.weight": tensor(10, width),
            "layers.4.bias": tensor(10),
        },
        str(path),
    )
    return {"input_dim": 64, "widths": [width, width], "num_classes": 10}


# --------------------------------------------------------------------------- API helpers


def api_upload(client: httpx.Client, path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Upload one zoo ``mlp`` checkpoint; the API's answer (201 required)."""
    with open(path, "rb") as fh:
        r = client.post(
            "/api/checkpoints",
            files={"file": (path.name, fh, "application/octet-stream")},
            data={"arch": "mlp", "arch_config": json.dumps(config)},
        )
    if r.status_code != 201:
        raise RuntimeError(f"upload of {path.name} answered {r.status_code}: {r.text[:500]}")
    return dict(r.json())


def submit_runs(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[str]:
    """POST each run request (202 required); the run ids."""
    ids = []
    for body in bodies:
        r = client.post("/api/runs", json=body)
        if r.status_code != 202:
            raise RuntimeError(f"POST /api/runs answered {r.status_code}: {r.text[:500]}")
        ids.append(str(r.json()["id"]))
    return ids


def wait_finished(client: httpx.Client, total: int, timeout: float, stack: Stack) -> float:
    """Poll the caller's run counts until ``total`` runs are finished; the monotonic time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for status in ("succeeded", "failed"):
            r = client.get("/api/runs", params={"status": status, "limit": 1})
            r.raise_for_status()
            done += int(r.json()["count"])
        if done >= total:
            return time.monotonic()
        for name, proc in stack.procs.items():
            if name.startswith("worker") and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{stack.tail(name)}")
        time.sleep(0.2)
    raise RuntimeError(f"runs not finished after {timeout:.0f} s:\n{stack.tail('worker1-q')}")


# --------------------------------------------------------------------------- load generators


def _read_client_proc(
    base: str,
    token: str,
    routes: list[tuple[str, list[str], bool]],
    clients: int,
    duration: float,
    timeout: float,
    seed: int,
    out: str,
) -> None:
    """A load-generator process: ``clients`` asyncio clients for ``duration`` seconds."""

    async def main() -> dict[str, Any]:
        rng = random.Random(seed)
        samples: list[tuple[str, int, float, int]] = []
        errors: list[dict[str, Any]] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
            start = time.monotonic()
            stop = start + duration

            async def one_client() -> None:
                while time.monotonic() < stop:
                    name, paths, needs_auth = rng.choice(routes)
                    path = rng.choice(paths)
                    t0 = time.perf_counter()
                    try:
                        r = await client.get(path, headers=auth if needs_auth else None)
                        status, size, text = r.status_code, len(r.content), r.text[:300]
                    except Exception as exc:  # a transport error counts as an error too
                        status, size, text = 0, 0, f"{type(exc).__name__} {exc}".strip()
                    latency = time.perf_counter() - t0
                    samples.append((name, status, latency, size))
                    if not 200 <= status < 300:
                        errors.append({"route": name, "path": path, "status": status, "body": text})

            await asyncio.gather(*(one_client() for _ in range(clients)))
            wall = time.monotonic() - start
        return {"samples": samples, "errors": errors, "wall": wall}

    Path(out).write_text(json.dumps(asyncio.run(main())))


def _upload_client_proc(
    base: str, token: str, files: list[tuple[str, dict[str, Any]]], out: str
) -> None:
    """A load-generator process: every file uploaded at once (streamed from disk)."""

    async def main() -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=len(files))
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=600) as client:

            async def one(path: str, config: dict[str, Any]) -> dict[str, Any]:
                t0 = time.perf_counter()
                try:
                    with open(path, "rb") as fh:
                        r = await client.post(
                            "/api/checkpoints",
                            headers=auth,
                            files={"file": (Path(path).name, fh, "application/octet-stream")},
                            data={"arch": "mlp", "arch_config": json.dumps(config)},
                        )
                    status, body = r.status_code, r.json() if r.status_code == 201 else r.text
                except Exception as exc:
                    status, body = 0, f"{type(exc).__name__}: {exc}"
                return {
                    "path": path,
                    "status": status,
                    "body": body,
                    "seconds": time.perf_counter() - t0,
                }

            start = time.monotonic()
            rows = await asyncio.gather(*(one(p, c) for p, c in files))
            return {"uploads": list(rows), "wall": time.monotonic() - start}

    Path(out).write_text(json.dumps(asyncio.run(main())))


def run_child(target: Any, args: tuple[Any, ...], out: Path, timeout: float) -> dict[str, Any]:
    """Run a load generator in a spawned process; its JSON result."""
    proc = mp.get_context("spawn").Process(target=target, args=(*args, str(out)), daemon=True)
    proc.start()
    try:
        proc.join(timeout)
        if proc.is_alive():
            raise RuntimeError(f"the load generator did not finish in {timeout:.0f} s")
        if proc.exitcode != 0 or not out.exists():
            raise RuntimeError(f"the load generator failed (exit {proc.exitcode})")
        return dict(json.loads(out.read_text()))
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


class RssSampler(threading.Thread):
    """VmRSS of one process every ``interval`` seconds, with the monotonic time."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.samples.append((time.monotonic(), read_rss(self.pid)))
            self._stop_event.wait(self.interval)

    def finish(self) -> None:
        """Stop sampling."""
        self._stop_event.set()
        self.join(5)

    def window(self, start: float, end: float) -> list[int]:
        """The samples taken in ``[start, end)``."""
        return [rss for t, rss in self.samples if start <= t < end]


# --------------------------------------------------------------------------- phases


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Results:
    """Figures and failed checks of one invocation."""

    drain: dict[str, Any] = field(default_factory=dict)
    seed: dict[str, Any] = field(default_factory=dict)
    reads: list[dict[str, Any]] = field(default_factory=list)
    upload: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def phase_drain(stack: Stack, cfg: Config, res: Results) -> None:
    """N tiny runs queued with no worker, drained by fresh workers; exactly-once checks."""
    token = stack.tokens[DRAIN_USER]
    with httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        path = stack.tmp / "moons-mlp.safetensors"
        moons_checkpoint(path)
        ckpt = api_upload(client, path, MOONS_MLP)
        bodies = [
            {
                "checkpoint_id": ckpt["id"],
                "dataset": "moons",
                "measures": ["margin.output"],
                "options": {"seed": k},
            }
            for k in range(cfg.drain_runs)
        ]
        t0 = time.monotonic()
        run_ids = submit_runs(client, bodies)
        res.drain["submit_seconds"] = time.monotonic() - t0
        launch = time.monotonic()
        stack.start_workers("q")
        end = wait_finished(client, cfg.drain_runs, 600, stack)
    res.drain["wall"] = end - launch
    res.drain.update(verify_drain(stack, cfg, run_ids, res))


def verify_drain(stack: Stack, cfg: Config, run_ids: list[str], res: Results) -> dict[str, Any]:
    """Each run succeeded once: database rows, task ids, result rows, worker log lines."""
    from sqlalchemy import create_engine, func, select

    from backend.models import MeasureResultRow, Run

    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(
                select(
                    Run.id,
                    Run.status,
                    Run.attempts,
                    Run.task_id,
                    Run.worker_id,
                    Run.started_at,
                    Run.finished_at,
                ).where(Run.id.in_(run_ids))
            ).all()
            rows = dict(
                conn.execute(
                    select(MeasureResultRow.run_id, func.count())
                    .where(MeasureResultRow.run_id.in_(run_ids))
                    .group_by(MeasureResultRow.run_id)
                ).all()
            )
            cached = conn.scalar(
                select(func.count())
                .select_from(MeasureResultRow)
                .where(
                    MeasureResultRow.run_id.in_(run_ids), MeasureResultRow.cached_from.is_not(None)
                )
            )
    finally:
        engine.dispose()
    logs = stack.worker_logs()
    succeeded = [r for r in runs if r.status == "succeeded"]
    task_ids = [r.task_id for r in runs if r.task_id]
    log_done = {rid: logs.count(f"run {rid}: succeeded") for rid in run_ids}
    received = re.findall(r"Task genscope\.analyze_run\[([0-9a-f-]+)\] received", logs)
    skipped = len(re.findall(r"not claimable", logs))
    lost = len(re.findall(r"taken over by another worker|no longer ours", logs))
    per_worker = [
        len(re.findall(r"run [0-9a-f]+: succeeded", stack.log_text(p.stem)))
        for p in sorted(stack.tmp.glob("worker*-q.log"))
    ]
    checks = {
        "all runs succeeded": len(succeeded) == len(run_ids) == len(runs),
        "attempts == 1 for every run": all(r.attempts == 1 for r in runs),
        "distinct task ids, one per run": len(set(task_ids)) == len(run_ids),
        "one result row per run (measure), none from the cache": all(
            rows.get(rid) == 1 for rid in run_ids
        )
        and not cached,
        "one 'succeeded' log line per run": all(n == 1 for n in log_done.values()),
        "no attempt dropped or taken over": lost == 0,
    }
    for name, ok in checks.items():
        if not ok:
            res.failures.append(f"queue drain: {name}")
    started = [r.started_at for r in runs if r.started_at]
    finished = [r.finished_at for r in runs if r.finished_at]
    span = (max(finished) - min(started)).total_seconds() if started and finished else float("nan")
    return {
        "runs": len(run_ids),
        "succeeded": len(succeeded),
        "failed": sum(r.status == "failed" for r in runs),
        "max_attempts": max((r.attempts for r in runs), default=0),
        "task_ids": len(set(task_ids)),
        "received": len(received),
        "received_distinct": len(set(received)),
        "skipped": skipped,
        "lost": lost,
        "span": span,
        "per_worker": per_worker,
        "checks": checks,
    }


def phase_seed(stack: Stack, cfg: Config, res: Results) -> tuple[list[str], str]:
    """Stored runs computed by the workers from trained checkpoints; a comparison + share."""
    token = stack.tokens[READ_USER]
    t0 = time.monotonic()
    ckpts = trained_checkpoints(stack.tmp, cfg.seed_checkpoints, cfg.train_steps)
    res.seed["train_seconds"] = time.monotonic() - t0
    with httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        ids = [api_upload(client, path, config)["id"] for path, config in ckpts]
        params = {k: v for k, v in SEED_PARAMS.items() if k in cfg.measures}
        bodies = [
            {
                "checkpoint_id": ids[k % len(ids)],
                "dataset": "digits",
                "measures": cfg.measures,
                "params": params,
                "options": {"seed": k // len(ids)},
            }
            for k in range(cfg.seed_runs)
        ]
        t1 = time.monotonic()
        run_ids = submit_runs(client, bodies)
        end = wait_finished(client, cfg.seed_runs, 1800, stack)
        res.seed["compute_seconds"] = end - t1
        logs = stack.worker_logs()
        res.seed["skipped"] = logs.count("not claimable") - res.drain.get("skipped", 0)
        res.seed["resent"] = sum(int(n) for n in re.findall(r"recovery: (\d+) runs re-sent", logs))
        statuses = [client.get(f"/api/runs/{rid}?report=false").json() for rid in run_ids]
        failed = [s for s in statuses if s["status"] != "succeeded"]
        if failed:
            res.failures.append(f"seeding: {len(failed)} runs did not succeed: {failed[0]}")
        res.seed["result_rows"] = sum(len(s["results"]) for s in statuses)
        res.seed["cached_rows"] = sum(r["cached"] for s in statuses for r in s["results"])
        first = client.get(f"/api/runs/{run_ids[0]}")
        res.seed["report_bytes"] = len(first.content)
        chosen = run_ids[: cfg.compare_runs]
        r = client.post("/api/comparisons", json={"run_ids": chosen, "title": "load bench"})
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/comparisons answered {r.status_code}: {r.text[:300]}")
        share_token = str(r.json()["share_url"]).rsplit("/", 1)[-1]
    res.seed.update(runs=len(run_ids), checkpoints=len(ids))
    return run_ids, share_token


def read_routes(
    run_ids: list[str], share: str, seed_runs: int
) -> list[tuple[str, list[str], bool]]:
    """(route, concrete paths, needs the token) of the read load."""
    pages = [f"/api/runs?offset={o}&limit=50" for o in range(0, max(seed_runs, 1), 50)]
    return [
        ("GET /api/runs?offset&limit=50", pages, True),
        ("GET /api/runs/{id}", [f"/api/runs/{r}" for r in run_ids], True),
        ("GET /runs/{id} (HTML)", [f"/runs/{r}" for r in run_ids], False),
        ("GET /ui/runs/{id}?figures=1", [f"/ui/runs/{r}?figures=1" for r in run_ids], True),
        ("GET /share/{token} (HTML)", [f"/share/{share}"], False),
        ("GET /api/share/{token}", [f"/api/share/{share}"], False),
    ]


def pg_connections(stack: Stack) -> dict[str, int]:
    """The throwaway database's server connections by state (PostgreSQL only)."""
    if stack.pg_name is None:
        return {}
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity WHERE datname = %s "
            "GROUP BY 1",
            (stack.pg_name,),
        ).fetchall()
    return {str(state): int(n) for state, n in rows}


def wait_responsive(stack: Stack, token: str, limit: float) -> float | None:
    """Seconds until GET /api/runs?limit=1 answers 200 within 5 s again; None after ``limit``."""
    start = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() - start < limit:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{stack.base}/api/runs?limit=1", headers=headers, timeout=5)
            if r.status_code == 200:
                return time.monotonic() - start
        time.sleep(0.5)
    return None


def phase_read(
    stack: Stack, cfg: Config, res: Results, run_ids: list[str], share: str, clients: int
) -> None:
    """Warm every route once, then C clients for D seconds in load-generator processes."""
    token = stack.tokens[READ_USER]
    routes = read_routes(run_ids, share, cfg.seed_runs)
    with httpx.Client(base_url=stack.base, timeout=120) as client:
        for name, paths, needs_auth in routes:
            headers = {"Authorization": f"Bearer {token}"} if needs_auth else {}
            r = client.get(paths[0], headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"warm-up {name} answered {r.status_code}: {r.text[:300]}")
    procs = min(cfg.client_procs, clients)
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    results: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    running = []
    for i, n in enumerate(shares):
        out = stack.tmp / f"read-{clients}-{i}.json"
        args = (stack.base, token, routes, n, cfg.duration, cfg.timeout, 1000 + i, str(out))
        p = ctx.Process(target=_read_client_proc, args=args, daemon=True)
        p.start()
        running.append((p, out))
    pg_mid: dict[str, int] = {}
    try:
        time.sleep(cfg.duration / 2)
        with contextlib.suppress(Exception):
            pg_mid = pg_connections(stack)
        for p, out in running:
            p.join(cfg.duration + cfg.timeout + 120)
            if p.is_alive() or p.exitcode != 0 or not out.exists():
                raise RuntimeError(f"a read load generator failed (exit {p.exitcode})")
            results.append(json.loads(out.read_text()))
    finally:
        for p, _ in running:
            if p.is_alive():
                p.terminate()
                p.join(5)
    wall = max(r["wall"] for r in results)
    samples = [tuple(s) for r in results for s in r["samples"]]
    errors = [e for r in results for e in r["errors"]]
    table = []
    for name in [*(r[0] for r in routes), "all routes"]:
        mine = [s for s in samples if name == "all routes" or s[0] == name]
        lat = [float(s[2]) for s in mine]
        table.append(
            {
                "route": name,
                "requests": len(mine),
                "rps": len(mine) / wall,
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "kib": statistics.fmean(s[3] for s in mine) / 1024 if mine else 0.0,
                "errors": sum(not 200 <= int(s[1]) < 300 for s in mine),
            }
        )
    kinds: dict[str, int] = {}
    for e in errors:
        kind = f"{e['route']}: " + (str(e["status"]) if e["status"] else e["body"].split()[0])
        kinds[kind] = kinds.get(kind, 0) + 1
    for e in errors[:50]:
        print(f"error: {e['route']} {redact(e['path'])} -> {e['status']}: {e['body'][:200]}")
    recovered = wait_responsive(stack, token, cfg.recovery_wait) if errors else 0.0
    res.reads.append(
        {
            "clients": clients,
            "table": table,
            "wall": wall,
            "errors": errors,
            "kinds": kinds,
            "pg_mid": pg_mid,
            "recovered": recovered,
            "rss_after": read_rss(stack.procs["api"].pid),
        }
    )
    if errors:
        res.failures.append(
            f"read load, {clients} clients: {len(errors)} non-2xx answers or transport errors"
        )
    if recovered is None:
        res.failures.append(f"read load, {clients} clients: the API stayed unresponsive")


def phase_upload(stack: Stack, cfg: Config, res: Results, api_pid: int) -> None:
    """U concurrent ~50 MiB checkpoint uploads while the API's RSS is sampled every 50 ms."""
    token = stack.tokens[READ_USER]
    folder = stack.tmp / "uploads"
    folder.mkdir()
    files, shas = [], {}
    for i in range(cfg.uploads):
        path = folder / f"big-mlp-{i}.safetensors"
        config = big_checkpoint(path, cfg.upload_mb, seed=100 + i)
        files.append((str(path), config))
        shas[str(path)] = sha256_file(path)
    sizes = [Path(p).stat().st_size for p, _ in files]
    sampler = RssSampler(api_pid)
    sampler.start()
    try:
        time.sleep(1.0 if cfg.smoke else 2.0)
        t_start = time.monotonic()
        out = run_child(_upload_client_proc, (stack.base, token, files), folder / "up.json", 900)
        t_end = time.monotonic()
        time.sleep(1.0 if cfg.smoke else 3.0)
    finally:
        sampler.finish()
    before = sampler.window(0, t_start)
    during = sampler.window(t_start, t_end)
    after = sampler.window(t_end, float("inf"))
    baseline = int(statistics.median(before)) if before else 0
    peak = max(during + after) if during or after else 0
    rows = out["uploads"]
    failed = [r for r in rows if r["status"] != 201]
    for r in failed:
        res.failures.append(f"upload: {Path(r['path']).name} answered {r['status']}: {r['body']}")
    stored = stored_checks(stack, token, [r for r in rows if r["status"] == 201], shas)
    for name, ok in stored.items():
        if not ok:
            res.failures.append(f"upload: {name}")
    res.upload = {
        "count": len(rows),
        "ok": len(rows) - len(failed),
        "size_mib": statistics.fmean(sizes) / 2**20,
        "wall": out["wall"],
        "latencies": sorted(float(r["seconds"]) for r in rows),
        "mib_s": sum(sizes) / 2**20 / out["wall"],
        "baseline": baseline,
        "peak": peak,
        "after": int(statistics.median(after)) if after else 0,
        "samples": len(sampler.samples),
        "checks": stored,
        "total_mib": sum(sizes) / 2**20,
    }


def stored_checks(
    stack: Stack, token: str, rows: list[dict[str, Any]], shas: dict[str, str]
) -> dict[str, bool]:
    """Every accepted upload is listed, its blob is present and hashes to the local sha256."""
    with httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        listed = {c["id"] for c in client.get("/api/checkpoints?limit=500").json()["data"]}
    blob_root = stack.data_dir / "blobs"
    same_sha, present, matches = True, True, True
    for r in rows:
        body = r["body"]
        same_sha &= body["sha256"] == shas[r["path"]]
        blob = blob_root / "objects" / body["sha256"][:2] / body["sha256"]
        present &= blob.is_file()
        matches &= blob.is_file() and sha256_file(blob) == shas[r["path"]]
    leftovers = [p for p in (blob_root / "tmp").iterdir() if p.is_file()]
    return {
        "all uploads answered 201": len(rows) == len(shas),
        "answered sha256 == sha256 of the file sent": same_sha,
        "all listed by GET /api/checkpoints": all(r["body"]["id"] in listed for r in rows),
        "blob present for every upload": present,
        "sha256 of every stored blob == the file sent": matches,
        "no temporary upload file left": not leftovers,
    }


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    """Cores, CPU model, memory, OS and Python of this machine."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 2**20:.0f} GiB RAM"
    return {
        "cpu": f"{os.cpu_count()} cores ({model}, {platform.machine()})",
        "mem": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def mib(n: float) -> str:
    """Bytes as whole MiB."""
    return f"{n / 2**20:.0f} MiB"


def redact(path: str) -> str:
    """A path without its share token (a credential) and with long ids shortened."""
    path = re.sub(r"/share/[^/?]+", "/share/<token>", path)
    return re.sub(r"([0-9a-f]{8})[0-9a-f]{24}", r"\1…", path)


def render_read(cfg: Config, r: dict[str, Any]) -> list[str]:
    """One read phase's table, error summary and connection probe."""
    lines = [
        "",
        f"### Read load: {r['clients']} clients, {cfg.duration:g} s "
        f"(measured {r['wall']:.1f} s, request timeout {cfg.timeout:g} s)",
        "",
        "| route | requests | req/s | p50 ms | p90 ms | p99 ms | mean KiB | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in r["table"]:
        bold = "**" if row["route"] == "all routes" else ""
        lines.append(
            f"| {bold}{row['route']}{bold} | {row['requests']} | {row['rps']:.1f} | "
            f"{1000 * row['p50']:.0f} | {1000 * row['p90']:.0f} | {1000 * row['p99']:.0f} | "
            f"{row['kib']:.0f} | {row['errors']} |"
        )
    lines.append("")
    if r["pg_mid"]:
        states = ", ".join(f"{n} {state}" for state, n in sorted(r["pg_mid"].items()))
        lines.append(f"PostgreSQL connections of the service half-way through: {states}.")
    lines.append(f"API RSS after this phase: {mib(r['rss_after'])}.")
    if r["errors"]:
        back = r["recovered"]
        lines += [
            "",
            f"Errors ({len(r['errors'])}; status 0 = no answer within the timeout or a "
            "transport error), by route and kind: "
            + "; ".join(f"{k} × {n}" for k, n in sorted(r["kinds"].items()))
            + ". After the load stopped the API answered again "
            + (
                f"after {back:.0f} s."
                if back is not None
                else f"NOT within {cfg.recovery_wait:.0f} s (still wedged)."
            ),
            "",
            *(
                f"- {e['route']} `{redact(e['path'])}` → {e['status']}: {e['body'][:160]}"
                for e in r["errors"][:5]
            ),
        ]
    return lines


def render(cfg: Config, stack: Stack, res: Results, meta: dict[str, Any]) -> str:
    """This configuration's markdown section (also printed)."""
    m = meta["machine"]
    sec = res.seconds
    lines = [
        f"<!-- load:{cfg.key} -->",
        f"## {cfg.label}{' (smoke)' if cfg.smoke else ''}",
        "",
        f"`{cfg.command}` — {meta['started']:%Y-%m-%d %H:%M} UTC, {meta['total']:.0f} s in all "
        f"(start-up {sec.get('startup', 0):.0f} s, drain {sec.get('drain', 0):.0f} s, "
        f"seeding {sec.get('seed', 0):.0f} s, uploads {sec.get('upload', 0):.0f} s, read "
        f"load {sec.get('read', 0):.0f} s).",
        "",
        f"Machine: {m['cpu']}, {m['mem']}, {m['os']}, Python {m['python']}. Load average "
        f"(1 min) {meta['load_before']:.1f} before, {meta['load_after']:.1f} after.",
    ]
    if cfg.note:
        lines += ["", cfg.note]
    lines += [
        "",
        "Processes: the API is one `genscope serve --no-worker` process (uvicorn, one event "
        "loop + its thread pool, so about one core under the GIL); each load generator is a "
        "separate process (httpx.AsyncClient, one connection per client); the workers are "
        f"{cfg.workers} × `genscope worker --concurrency 1` (stopped before the upload and read "
        "phases); PostgreSQL/Redis, when used, share the same cores. Nothing is pinned.",
        "",
        "| setting | value |",
        "| --- | --- |",
        *(f"| `{k}` | {v} |" for k, v in stack.settings_shown().items()),
    ]
    d = res.drain
    if d:
        lines += [
            "",
            f"### Queue drain: {d['runs']} queued runs, {cfg.workers} workers × concurrency 1",
            "",
            "Moons MLP 2-8-2, `margin.output` on `moons`, seeds 0..N-1 (distinct cache keys); "
            "all queued before the workers start; wall time from starting the workers "
            "(process start-up included) until the last run finished (polled every 0.2 s); "
            "the span is the first claim to the last finish in the database.",
            "",
            "| runs | succeeded | failed | wall s | runs/s | span s | runs/s (span) "
            "| per worker | max attempts | distinct task ids | messages received "
            "| duplicates skipped |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
            f"| {d['runs']} | {d['succeeded']} | {d['failed']} | {d['wall']:.1f} | "
            f"{d['runs'] / d['wall']:.2f} | {d['span']:.1f} | {d['runs'] / d['span']:.2f} | "
            f"{' + '.join(str(n) for n in d['per_worker'])} | {d['max_attempts']} | "
            f"{d['task_ids']} | {d['received']} | {d['skipped']} |",
            "",
            *(f"- {'ok' if ok else 'FAILED'}: {name}" for name, ok in d["checks"].items()),
        ]
    s = res.seed
    if s:
        n = s.get("checkpoints", 0)
        lines += [
            "",
            "### Seeded data",
            "",
            f"{n} digits MLPs (widths {', '.join(str(w) for w in SEED_WIDTHS[:n])}, trained "
            f"{cfg.train_steps} full-batch Adam steps) uploaded through the API, then "
            f"{s.get('runs', 0)} runs (run k: checkpoint k mod {n}, seed k div {n}, so no "
            f"cache hits) of {len(cfg.measures)} measures ({', '.join(cfg.measures)}; "
            "`hessian.density` with steps=20, probes=1) on `digits`, computed by the same "
            f"workers in {s.get('compute_seconds', 0):.0f} s: {s.get('result_rows', 0)} result "
            f"rows ({s.get('cached_rows', 0)} from the cache); one run's JSON with its report "
            f"is {s.get('report_bytes', 0) / 1024:.0f} KiB. Runs re-sent by recovery while "
            f"they waited: {s.get('resent', 0)}; duplicate messages skipped by the claim: "
            f"{s.get('skipped', 0)}. One comparison of the first {cfg.compare_runs} runs, with "
            "a share link.",
        ]
    u = res.upload
    if u:
        lat = u["latencies"]
        lines += [
            "",
            f"### Upload load: {u['count']} concurrent uploads of {u['size_mib']:.1f} MiB",
            "",
            "Valid safetensors checkpoints of a zoo MLP 64-w-w-10 (distinct random weights, "
            "architecture sent with the upload), streamed from disk by the client; each is "
            "inspected by the service (`genscope inspect` subprocess) before it is stored.",
            "",
            "| uploads | stored | wall s | per upload s (min / median / max) | MiB/s "
            "| API RSS baseline | peak | peak increase | after | data sent |",
            "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {u['count']} | {u['ok']} | {u['wall']:.1f} | {lat[0]:.1f} / "
            f"{statistics.median(lat):.1f} / {lat[-1]:.1f} | {u['mib_s']:.0f} | "
            f"{mib(u['baseline'])} | {mib(u['peak'])} | {mib(u['peak'] - u['baseline'])} | "
            f"{mib(u['after'])} | {u['total_mib']:.0f} MiB |",
            "",
            f"RSS of the API process sampled every 50 ms ({u['samples']} samples: before, "
            f"during and after); after start-up it was {mib(res.rss.get('start', 0))}.",
            "",
            *(f"- {'ok' if ok else 'FAILED'}: {name}" for name, ok in u["checks"].items()),
        ]
    for r in res.reads:
        lines += render_read(cfg, r)
    errors = sum(len(r["errors"]) for r in res.reads)
    lines += [
        "",
        f"Result: {'OK' if not res.failures else 'FAILED'} "
        f"({len(res.failures)} failed checks, {errors} read errors).",
        *(f"- {f}" for f in res.failures),
        f"<!-- /load:{cfg.key} -->",
    ]
    return "\n".join(lines) + "\n"


HEADER = """# Load benchmark (loopback)

`bench/load.py` starts the real service (API process + `genscope worker` processes, auth on, a
fresh data directory and database) and measures, on loopback: a queue drain (exactly-once
checks), the read routes under concurrent clients, and concurrent large uploads with the API's
RSS sampled every 50 ms. See the script's docstring for the method; each configuration below is
one invocation.

"""


def write_section(path: Path, key: str, text: str) -> None:
    """Replace this configuration's section of ``path`` (or append it)."""
    old = path.read_text() if path.exists() else HEADER
    pattern = re.compile(
        rf"<!-- load:{re.escape(key)} -->.*?<!-- /load:{re.escape(key)} -->\n?", re.S
    )
    if pattern.search(old):
        new = pattern.sub(lambda _m: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


# --------------------------------------------------------------------------- main


def _terminate(_signum: int, _frame: Any) -> None:
    """SIGTERM: clean up like Ctrl-C."""
    raise KeyboardInterrupt


def run(cfg: Config) -> int:
    """Every phase on one stack; the exit status."""
    started = dt.datetime.now(dt.timezone.utc)
    t_all = time.monotonic()
    load_before = os.getloadavg()[0]
    res = Results()
    stack = Stack(cfg)
    status = 1
    try:
        t = time.monotonic()
        stack.prepare()
        stack.create_user(READ_USER)
        stack.create_user(DRAIN_USER)
        api_pid = stack.start_api()
        res.rss["start"] = read_rss(api_pid)
        res.seconds["startup"] = time.monotonic() - t
        print(f"API on {stack.base} (pid {api_pid}), data in {stack.tmp}", flush=True)

        t = time.monotonic()
        phase_drain(stack, cfg, res)
        res.seconds["drain"] = time.monotonic() - t
        d = res.drain
        print(f"drain: {d['succeeded']}/{d['runs']} in {d['wall']:.1f} s", flush=True)

        t = time.monotonic()
        run_ids, share = phase_seed(stack, cfg, res)
        res.seconds["seed"] = time.monotonic() - t
        print(f"seeded {len(run_ids)} runs in {res.seconds['seed']:.0f} s", flush=True)
        stack.stop_workers()

        t = time.monotonic()
        phase_upload(stack, cfg, res, api_pid)
        res.seconds["upload"] = time.monotonic() - t
        print(f"uploads: {res.upload['ok']}/{res.upload['count']} stored", flush=True)

        t = time.monotonic()
        for clients in cfg.clients:
            phase_read(stack, cfg, res, run_ids, share, clients)
            last = res.reads[-1]
            print(
                f"read load, {clients} clients: {last['table'][-1]['requests']} requests, "
                f"{len(last['errors'])} errors",
                flush=True,
            )
        res.seconds["read"] = time.monotonic() - t

        if stack.procs["api"].poll() is not None:
            res.failures.append(f"the API exited with {stack.procs['api'].returncode}")
        api_log = stack.log_text("api")
        tracebacks = api_log.count("Traceback (most recent call last)")
        if tracebacks:
            res.failures.append(f"the API logged {tracebacks} tracebacks")
            print(stack.tail("api", 80), file=sys.stderr)
        meta = {
            "machine": machine(),
            "started": started,
            "total": time.monotonic() - t_all,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }
        text = render(cfg, stack, res, meta)
        print(text, flush=True)
        if cfg.out is not None:
            write_section(cfg.out, cfg.key, text)
            print(f"wrote {cfg.out}")
        status = 0 if not res.failures else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        status = 130
    except Exception as exc:
        print(f"load bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        stack.close()
    errors = sum(len(r["errors"]) for r in res.reads)
    print(
        f"load bench: {({0: 'OK', 130: 'INTERRUPTED'}).get(status, 'FAILED')} "
        f"({errors} read errors, {len(res.failures)} failed checks)",
        flush=True,
    )
    return status


def main() -> None:
    """Parse the options, run, exit with the status."""
    cfg = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    sys.exit(run(cfg))


if __name__ == "__main__":
    main()
