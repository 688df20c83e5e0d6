"""A run's loading and computation in a sandboxed child (``python -m genscope.job``).

The Celery pool process keeps the database, the broker and the blob store; the child gets the
checkpoint, the dataset blob and any checkpoint-valued parameter's blob read-only, a scratch
directory for the report, no network, and ``GENSCOPE_RUN_MEMORY_MB`` / ``GENSCOPE_RUN_CPU_SECONDS``
(:mod:`backend.sandbox`). Its progress lines are relayed to :class:`~worker.progress.RunProgress`
(which renews the lease). Outcomes, as when the engine ran in the pool process:

* an engine error → :class:`ChildFailed` with the engine's code and message;
* another exception in the child → ``analysis_failed`` with ``Type: message``;
* a full disk in the child → ``OSError(ENOSPC)`` here, so ``insufficient_storage`` as before;
* killed by a signal (a limit of the sandbox, the kernel's OOM killer) → ``sandbox_limit``
  naming the limit;
* the soft time limit (``SoftTimeLimitExceeded``, raised in this thread) or a lost claim: the
  child is killed, then the exception goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from backend import sandbox as sbx
from backend.core.config import Settings
from genscope.errors import GenScopeError

log = logging.getLogger("genscope.worker")

DATASETS_INSIDE = "/datasets"


class ChildFailed(GenScopeError):
    """The sandboxed child reported an error (its code and message, or the sandbox's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def run_limits(settings: Settings) -> sbx.Limits:
    """The sandbox limits of one run: ``GENSCOPE_RUN_CPU_SECONDS`` 0 means the task time limit
    times the CPU cores (torch's threads add up their CPU time)."""
    cpu = settings.run_cpu_seconds or settings.task_time_limit * (os.cpu_count() or 1)
    return sbx.Limits(memory_mb=settings.run_memory_mb, cpu_seconds=cpu)


def _input_paths(value: Any, blob_dir: Path) -> list[Path]:
    """Blob paths among a spec's parameter values (checkpoint-valued parameters)."""
    if isinstance(value, str) and value.startswith(str(blob_dir)) and Path(value).is_file():
        return [Path(value)]
    return []


def analyze_in_sandbox(
    settings: Settings,
    progress: Any,
    checkpoint: Path,
    arch: str | None,
    arch_config: Any,
    data_spec: str,
    measures: list[str],
    params: dict[str, dict[str, Any]],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Run ``genscope.job`` sandboxed and return its report (``Report.to_dict()``)."""
    box = sbx.from_settings(settings)
    limits = run_limits(settings)
    inputs = [checkpoint]
    kind, _, data_path = data_spec.partition(":")
    data_file = Path(data_path) if data_path and Path(data_path).is_file() else None
    if data_file is not None:
        inputs.append(data_file)
        data_spec = f"{kind}:{box.path_for(data_file)}"
    inner_params: dict[str, dict[str, Any]] = {}
    for measure_id, values in params.items():
        inner = {}
        for name, value in values.items():
            found = _input_paths(value, settings.blob_dir)
            if found:
                inputs.extend(p for p in found if p not in inputs)
                value = box.path_for(found[0])
            inner[name] = value
        inner_params[measure_id] = inner
    ro_dirs: dict[str, Path] = {}
    env: dict[str, str] = {}
    datasets = settings.data_dir / "datasets"
    if box.mode != "off" and datasets.is_dir():  # torchvision sets, read-only
        ro_dirs[f"{DATASETS_INSIDE}/datasets"] = datasets
        env["GENSCOPE_DATA_DIR"] = DATASETS_INSIDE
    root = settings.data_dir / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix="run-"))
    try:
        inside = Path(box.scratch_inside or scratch)
        spec = {
            "checkpoint": box.path_for(checkpoint),
            "arch": arch,
            "arch_config": arch_config,
            "data": data_spec,
            "measures": measures,
            "params": inner_params,
            "options": options,
            "torch_threads": settings.torch_threads,
            "out": str(inside / "report.json"),
        }
        (scratch / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        argv = box.command(
            "genscope.job",
            [str(inside / "spec.json")],
            scratch=scratch,
            inputs=inputs,
            ro_dirs=ro_dirs,
            env=env,
            limits=limits,
        )
        error = _relay(argv, box.child_env(scratch), progress, limits)
        if error is not None:
            raise error
        return json.loads((scratch / "report.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _relay(
    argv: list[str], env: dict[str, str] | None, progress: Any, limits: sbx.Limits
) -> Exception | None:
    """Start the child, relay its progress, wait; the error it ended with, if any."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    tail: deque[str] = deque(maxlen=200)
    drain = threading.Thread(
        target=lambda: tail.extend(proc.stderr or ()), name="job-stderr", daemon=True
    )
    drain.start()
    error: dict[str, Any] | None = None
    done = False
    try:
        for line in proc.stdout or ():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "progress" in msg:
                progress(float(msg["progress"]), str(msg.get("message", "")))
            elif "error" in msg and isinstance(msg["error"], dict):
                error = msg["error"]
            elif "done" in msg:
                done = True
        returncode = proc.wait()
    finally:  # the soft time limit or a lost claim interrupts the loop: stop the child
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
    stderr = "".join(tail)
    if error is not None:
        code, message = str(error.get("code", "analysis_failed")), str(error.get("message", ""))
        if code == "analysis_failed":
            log.error("the sandboxed analysis raised:\n%s", stderr[-4000:])
            if "[Errno 28]" in message:
                return OSError(errno.ENOSPC, message)
        return ChildFailed(code, message)
    if returncode == 0 and done:
        return None
    hit = sbx.limit_hit(returncode, limits)
    log.error("the sandboxed analysis stopped (exit %s): %s", returncode, stderr[-4000:])
    if hit is not None:
        return ChildFailed(
            "sandbox_limit", f"the analysis was stopped at the sandbox's limit on {hit}"
        )
    crash = sbx.crash_signal(returncode)
    how = f"was killed by {crash}" if crash else f"exited with status {returncode}"
    return ChildFailed("analysis_failed", f"the analysis process {how} (see the logs)")
