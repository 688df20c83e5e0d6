"""Uploaded files inspected by the engine in a sandboxed subprocess (the API imports no torch).

* :func:`inspect_checkpoint` / :func:`inspect_dataset` run ``genscope inspect`` in a subprocess
  (with a timeout) inside the sandbox (:mod:`backend.sandbox`: the upload bound read-only, a
  private scratch directory, no network, memory and CPU limits ``GENSCOPE_INSPECT_MEMORY_MB`` /
  ``GENSCOPE_INSPECT_CPU_SECONDS``) and turn its one JSON line into a dict, or its
  ``{"error": ...}`` line into a :class:`ServiceError` with the engine's code. At most
  ``GENSCOPE_MAX_INSPECTIONS`` run at once; a caller waits ``GENSCOPE_INSPECT_QUEUE_SECONDS``
  for a slot, then gets 503 ``server_busy`` with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend import sandbox as sbx
from backend.core.config import Settings
from backend.core.errors import ServiceError

log = logging.getLogger("genscope.api")


def _last_json_line(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def _hide_path(text: str, path: Path) -> str:
    """Name the upload, not the server's temp file, in messages sent back to the caller."""
    return text.replace(str(path), f"the uploaded {path.suffix.lstrip('.') or 'file'}").replace(
        path.name, f"the uploaded {path.suffix.lstrip('.') or 'file'}"
    )


class InspectionsBusy(ServiceError):
    """Every inspection slot stayed taken while the caller waited (503 with Retry-After)."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            "server_busy",
            f"{limit} uploads are being inspected; try again in {retry_after} s "
            "(GENSCOPE_MAX_INSPECTIONS)",
            {"retry_after": retry_after},
        )
        self.retry_after = retry_after


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot_pool(limit: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        if limit not in _slots:
            _slots[limit] = threading.BoundedSemaphore(limit)
        return _slots[limit]


@contextmanager
def inspection_slot(settings: Settings) -> Iterator[None]:
    """One of ``GENSCOPE_MAX_INSPECTIONS`` slots, waited for at most
    ``GENSCOPE_INSPECT_QUEUE_SECONDS``; :class:`InspectionsBusy` beyond that."""
    pool = _slot_pool(settings.max_inspections)
    if not pool.acquire(timeout=settings.inspect_queue_seconds):
        raise InspectionsBusy(
            settings.max_inspections, max(1, round(settings.inspect_queue_seconds))
        )
    try:
        yield
    finally:
        pool.release()


def _sandboxed_inspect(
    path: Path, extra: list[str], timeout: float, settings: Settings
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``genscope inspect PATH EXTRA...`` in the sandbox; returns the process and the path the
    child saw (for messages)."""
    box = sbx.from_settings(settings)
    limits = sbx.Limits(
        memory_mb=settings.inspect_memory_mb, cpu_seconds=settings.inspect_cpu_seconds
    )
    with inspection_slot(settings), tempfile.TemporaryDirectory(prefix="genscope-inspect-") as tmp:
        seen = box.path_for(path)
        argv = box.command(
            "genscope.cli",
            ["inspect", seen, *extra],
            scratch=Path(tmp),
            inputs=[path],
            limits=limits,
        )
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=box.child_env(Path(tmp)),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ServiceError(
                "inspect_timeout", f"inspecting the file took longer than {timeout:.0f} s"
            ) from None
    hit = sbx.limit_hit(proc.returncode, limits)
    if hit is not None:
        log.error("inspect of %s stopped by the sandbox: %s", path.name, hit)
        raise ServiceError(
            "sandbox_limit",
            f"inspecting the file went past the sandbox's limit on {hit}",
            {"limit": hit},
        )
    return proc, seen


def _inspect(args: list[str], timeout: float, what: str, settings: Settings) -> dict[str, Any]:
    path = Path(args[0])
    proc, seen = _sandboxed_inspect(path, args[1:], timeout, settings)
    try:
        out = _last_json_line(proc.stdout)
    except ValueError:
        out = None
    if isinstance(out, dict) and "error" in out and proc.returncode == 2:
        err = out["error"]
        message = _hide_path(_hide_path(str(err.get("message", "")), Path(seen)), path)
        raise ServiceError(err.get("code", "bad_request"), message, err.get("detail"))
    crash = sbx.crash_signal(proc.returncode)
    if crash is not None:  # the file crashed the reader: the file's fault, not the service's
        log.error("inspect of a %s crashed (%s): %s", what, crash, proc.stderr[-4000:])
        code = "bad_dataset" if what == "dataset" else "bad_checkpoint"
        raise ServiceError(
            code, f"the {what} could not be read: reading it crashed the reader ({crash})"
        )
    if proc.returncode != 0 or not isinstance(out, dict):
        log.error(
            "inspect of a %s failed (exit %s): %s", what, proc.returncode, proc.stderr[-4000:]
        )
        raise ServiceError("inspect_failed", f"the {what} could not be inspected (see the logs)")
    return out


def inspect_checkpoint(
    path: Path,
    arch: str | None,
    arch_config: Mapping[str, Any] | None,
    timeout: float,
    settings: Settings,
) -> dict[str, Any]:
    """What ``genscope inspect`` says of a checkpoint (format, sha256, num_params, layers...)."""
    args = [str(path)]
    if arch:
        args += ["--arch", arch]
    if arch_config is not None:
        args += ["--arch-config", json.dumps(dict(arch_config))]
    return _inspect(args, timeout, "checkpoint", settings)


def inspect_dataset(path: Path, timeout: float, settings: Settings) -> dict[str, Any]:
    """What ``genscope inspect --dataset`` says of an npz/safetensors file."""
    return _inspect([str(path), "--dataset"], timeout, "dataset", settings)
