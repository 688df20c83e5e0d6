"""docker-compose.yml: validated by the compose client when one is installed (no engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid() -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("no docker compose client installed")
    for profile in ([], ["--profile", "cpu"]):
        proc = subprocess.run(
            [*compose, *profile, "config", "--services"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        services = set(proc.stdout.split())
        assert {"api", "worker-gpu", "redis", "postgres"} <= services
        if profile:
            assert "worker-cpu" in services
