"""``genscope worker``: a Celery worker for the configured broker, added to ``genscope`` through
the ``genscope.commands`` entry points (``pyproject.toml``).

This module imports only typer and the service's command helpers; Celery, the database and the
task code are imported when the command runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from backend.cli import require_sandbox, service_settings


def cuda_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (no CUDA in the parent)."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def worker(
    queues: Annotated[
        str | None, typer.Option(help="comma-separated; default gpu with a GPU, else cpu")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="pool processes (one per GPU)")] = 1,
    max_tasks_per_child: Annotated[
        int, typer.Option(min=1, help="recycle a pool process after this many runs")
    ] = 200,
    max_memory_per_child: Annotated[
        int,
        typer.Option(
            min=64,
            help="recycle a pool process after a run that left it above this RSS (MiB)",
        ),
    ] = 4096,
    pool: Annotated[str, typer.Option(help="prefork | solo")] = "prefork",
    hostname: Annotated[str | None, typer.Option(help="worker node name")] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG | INFO | WARNING")] = "INFO",
) -> None:
    """Start a Celery worker for the configured broker (GENSCOPE_BROKER_URL)."""
    from backend.core.db import migrate
    from worker.celery_app import make_celery

    settings = service_settings()
    settings.ensure_dirs()
    require_sandbox(settings)
    migrate(settings.sqlalchemy_url)
    chosen = queues or ("gpu" if cuda_present() else "cpu")
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--queues={chosen}",
        f"--concurrency={concurrency}",
        f"--max-tasks-per-child={max_tasks_per_child}",
        f"--max-memory-per-child={max_memory_per_child * 1024}",  # Celery counts KiB
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    make_celery(settings).worker_main(argv)
