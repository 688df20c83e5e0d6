"""The engine seen from the API without importing torch.

* :func:`inspect_checkpoint` / :func:`inspect_dataset` run ``genscope inspect`` in a subprocess
  (with a timeout) inside the sandbox (:mod:`backend.sandbox`: the upload bound read-only, a
  private scratch directory, no network, memory and CPU limits ``GENSCOPE_INSPECT_MEMORY_MB`` /
  ``GENSCOPE_INSPECT_CPU_SECONDS``) and turn its one JSON line into a dict, or its
  ``{"error": ...}`` line into a :class:`ServiceError` with the engine's code. At most
  ``GENSCOPE_MAX_INSPECTIONS`` run at once; a caller waits ``GENSCOPE_INSPECT_QUEUE_SECONDS``
  for a slot, then gets 503 ``server_busy`` with ``Retry-After``.
* :func:`measure_catalogue` is the output of ``genscope measures --json``, computed once per
  engine fingerprint (version + the measure modules' files) and cached in the data directory;
  :func:`validate_measures` checks a run request against it with the engine's own parameter
  coercion (``genscope.measures.registry.Param``; the registry module itself imports no torch,
  only its measure modules do).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend import sandbox as sbx
from backend.core.config import Settings
from backend.core.errors import ServiceError

log = logging.getLogger("genscope.api")

BUILTIN_DATASETS: dict[str, str] = {
    "digits": "scikit-learn 8x8 digits, 10 classes, stratified 80/20 split (seed 0)",
    "moons": "two interleaving half-circles, 2-D, 2 classes (seed 0)",
    "blobs": "Gaussian blobs, low-dimensional, several classes (seed 0)",
    "linear": "linearly separable 2-class set (seed 0)",
}
TORCHVISION_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")

_catalogue_lock = threading.Lock()
_catalogue_memo: dict[str, list[dict[str, Any]]] = {}


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return subprocess.run(
            [sys.executable, "-m", "genscope.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(
            "inspect_timeout", f"inspecting the file took longer than {timeout:.0f} s"
        ) from None


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


def engine_fingerprint() -> str:
    """The engine version plus name, size and mtime of each measure module."""
    import genscope

    digest = hashlib.sha256(genscope.__version__.encode())
    spec = importlib.util.find_spec("genscope.measures")
    for folder in spec.submodule_search_locations or [] if spec else []:
        for path in sorted(Path(folder).glob("*.py")):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def measure_catalogue(data_dir: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every measure's description (``genscope measures --json``), cached per fingerprint."""
    key = engine_fingerprint()
    with _catalogue_lock:
        if key in _catalogue_memo:
            return _catalogue_memo[key]
        cache = data_dir / "catalogue" / f"measures-{key}.json"
        if cache.is_file():
            items = json.loads(cache.read_text(encoding="utf-8"))
        else:
            proc = _cli("measures", "--json", timeout=timeout)
            if proc.returncode != 0:
                log.error("genscope measures --json failed: %s", proc.stderr[-4000:])
                raise ServiceError("internal_error", "the measure catalogue is unavailable")
            items = json.loads(proc.stdout)
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(items), encoding="utf-8")
            os.replace(tmp, cache)
        _catalogue_memo[key] = items
        return items


_KINDS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def _param(desc: Mapping[str, Any]) -> Any:
    from genscope.measures.registry import Param

    choices = desc.get("choices")
    return Param(
        name=desc["name"],
        kind=_KINDS.get(desc.get("type", "str"), str),
        default=desc.get("default"),
        min=desc.get("min"),
        max=desc.get("max"),
        choices=tuple(choices) if choices is not None else None,
        optional=desc.get("default") is None,
    )


def validate_measures(
    catalogue: list[dict[str, Any]],
    names: Iterable[str] | str | None,
    params: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Expand ids/groups like ``resolve_measures`` and coerce params like ``resolve_params``.

    Returns:
        the selected measure ids (catalogue order) and the coerced parameter overrides.

    Raises:
        ServiceError: ``unknown_measure`` or ``bad_parameter``, with the engine's wording.
    """
    from genscope.errors import GenScopeError
    from genscope.measures.registry import GROUPS

    by_id = {m["id"]: m for m in catalogue}
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip() for n in (names or []) if n and n.strip()] or ["margin.output"]
    chosen: list[str] = []
    for name in wanted:
        if name == "all":
            ids = list(by_id)
        elif name in GROUPS:
            ids = [m["id"] for m in catalogue if m["group"] == name]
        elif name in by_id:
            ids = [name]
        else:
            raise ServiceError(
                "unknown_measure",
                f"unknown measure {name!r}; known: {', '.join(sorted(by_id))}; "
                f"groups: {', '.join(('all', *GROUPS))}",
                {"measure": name},
            )
        chosen.extend(i for i in ids if i not in chosen)
    order = {m["id"]: k for k, m in enumerate(catalogue)}
    chosen.sort(key=order.__getitem__)
    coerced: dict[str, dict[str, Any]] = {}
    for measure_id, values in (params or {}).items():
        if measure_id not in by_id:
            raise ServiceError(
                "unknown_measure", f"unknown measure {measure_id!r}", {"measure": measure_id}
            )
        if measure_id not in chosen:
            raise ServiceError(
                "bad_parameter",
                f"a parameter was given for {measure_id}, which is not among the selected measures",
                {"measure": measure_id},
            )
        known = {p["name"]: p for p in by_id[measure_id].get("params", [])}
        out: dict[str, Any] = {}
        for name, raw in dict(values or {}).items():
            if name not in known:
                raise ServiceError(
                    "bad_parameter",
                    f"{measure_id} has no parameter {name!r} "
                    f"(its parameters: {', '.join(known) or 'none'})",
                    {"param": f"{measure_id}.{name}"},
                )
            try:
                out[name] = _param(known[name]).coerce(raw, measure_id)
            except GenScopeError as exc:
                raise ServiceError(exc.code, exc.message, exc.detail) from None
        coerced[measure_id] = out
    return chosen, coerced


def checkpoint_params(
    catalogue: list[dict[str, Any]], params: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """The ``(measure id, parameter, value)`` of the given parameters that name a checkpoint
    (``"checkpoint": true`` in the catalogue): the service takes checkpoint ids there, never
    paths."""
    by_id = {m["id"]: m for m in catalogue}
    found = []
    for measure_id, values in params.items():
        marked = {p["name"] for p in by_id[measure_id].get("params", []) if p.get("checkpoint")}
        found.extend(
            (measure_id, name, str(value))
            for name, value in values.items()
            if name in marked and value is not None
        )
    return found
