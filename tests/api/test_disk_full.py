"""A full disk under the blob store: a 2 MB tmpfs is mounted over ``<data_dir>/blobs``.

An upload larger than the free space (but under the upload limit) answers 507
``insufficient_storage``, leaves nothing in ``tmp/`` or ``objects/`` and no row, and the service
keeps serving; a worker that cannot store its result blobs fails the run cleanly.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, upload_checkpoint

TMPFS_SIZE = "2m"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``<tmp>/data/blobs`` on a 2 MB tmpfs (skipped where mounting is not permitted)."""
    blobs = tmp_path / "data" / "blobs"
    blobs.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(blobs)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield blobs
    finally:
        from backend.core.db import dispose_engines

        dispose_engines()
        if subprocess.run(["umount", str(blobs)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(blobs)], check=False)


@pytest.fixture
def full_client(small_disk: Path, tmp_path: Path) -> Iterator[Any]:
    """The API (SQLite, embedded broker) with its blob store on the small disk."""
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.main import create_app

    settings = make_settings(
        small_disk.parent, f"sqlite:///{tmp_path / 'genscope.sqlite'}", max_upload_mb=16
    )
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as client:
        client.settings = settings  # type: ignore[attr-defined]
        yield client


def test_upload_on_a_full_disk_answers_507_and_keeps_nothing(
    full_client: Any, small_disk: Path, tiny_checkpoint: bytes
) -> None:
    big = os.urandom(3 * 1024 * 1024)  # more than the 2 MB disk, under the 16 MB limit
    answer = upload_checkpoint(full_client, big, name="big.safetensors")
    assert answer.status_code == 507, answer.text
    body = answer.json()
    assert body["code"] == "insufficient_storage"
    assert "no room" in body["message"] and set(body) == {"code", "message", "detail"}
    assert _files(small_disk) == []  # nothing in tmp/ or objects/
    listed = full_client.get("/api/checkpoints").json()
    assert listed["count"] == 0 and listed["data"] == []
    # the service keeps serving: a file that fits is stored
    small = upload_checkpoint(full_client, tiny_checkpoint)
    assert small.status_code in (200, 201), small.text
    assert full_client.get("/api/checkpoints").json()["count"] == 1
    assert _files(small_disk / "tmp") == [] and len(_files(small_disk / "objects")) == 1


def test_worker_on_a_full_disk_fails_the_run_cleanly(
    full_client: Any, small_disk: Path, tiny_checkpoint: bytes
) -> None:
    from worker.tasks import execute_run

    ckpt = upload_checkpoint(full_client, tiny_checkpoint).json()["id"]
    answer = full_client.post(
        "/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", "measures": ["margin.output"]}
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    with open(small_disk / "filler", "wb", buffering=0) as fh:  # fill the disk to the end
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    assert execute_run(full_client.settings, run_id, "task-full") == "failed"
    body = full_client.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "insufficient_storage"
    assert body["results"] == []
    assert _files(small_disk / "tmp") == []
