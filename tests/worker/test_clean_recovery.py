"""Clean recovery after a ``kill -9``: partial uploads removed at start-up, no orphaned worker.

``genscope serve`` is started for real (API + its worker child, embedded defaults), an upload is
streamed slowly into it, and ``serve`` is killed with SIGKILL mid-upload. Its worker child must
exit on its own (``PR_SET_PDEATHSIG``), and the next ``serve`` must remove the partial file left
in ``blobs/tmp`` while it keeps a file that a live writer still holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.blobs import BlobStore, BlobWriter
from tests.worker.procs import free_port, wait_until

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (``/proc/PID/task/*/children``)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env.update(GENSCOPE_DATA_DIR=str(data_dir), GENSCOPE_TORCH_THREADS="1")
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "genscope.cli", "serve", "--port", str(port)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _healthy(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
    return False


def _slow_body(boundary: str, stop: threading.Event) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    while not stop.is_set():  # never finishes: serve is killed meanwhile
        yield b"\0" * 65536
        time.sleep(0.05)


def test_kill9_of_serve_mid_upload_leaves_no_partial_file_and_no_orphan(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    serve = _serve(data_dir, port, tmp_path / "serve.log")
    stop = threading.Event()
    try:
        wait_until(lambda: _healthy(port), 120, "serve answering /api/health")
        workers = _children(serve.pid)
        assert workers, "serve started no worker child"
        boundary = "genscopeboundary"

        def upload() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"http://127.0.0.1:{port}/api/checkpoints",
                    content=_slow_body(boundary, stop),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                    timeout=60,
                )

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        tmp_dir = data_dir / "blobs" / "tmp"
        wait_until(lambda: any(tmp_dir.glob("*")), 30, "the upload's temp file")
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(timeout=10)
        stop.set()
        wait_until(lambda: not any(_alive(w) for w in workers), 60, "the worker child to exit")
        partial = [p for p in tmp_dir.iterdir() if p.is_file()]
        assert partial, "the kill left no partial file: the test did not test anything"

        # a file a live writer holds (another API process mid-upload) must survive start-up
        live = BlobWriter(BlobStore(data_dir / "blobs"), limit=1 << 20)
        live.write(b"still arriving")
        # the start-up sweep leaves files touched in the last minute alone (a file another
        # process created an instant ago may not be locked yet): age both past that grace
        hour_ago = time.time() - 3600
        for path in [*partial, live.path]:
            os.utime(path, (hour_ago, hour_ago))
        restarted = _serve(data_dir, port, tmp_path / "serve2.log")
        try:
            wait_until(lambda: _healthy(port), 120, "the second serve answering")
            left = {p for p in tmp_dir.iterdir() if p.is_file()}
            assert left == {live.path}, left
        finally:
            live.discard()
            restarted.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                restarted.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(restarted.pid, signal.SIGKILL)
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
