"""The analysis task: thin, idempotent, takes a run id (Celery docs, "Tasks").

:func:`execute_run` does the work and knows nothing of Celery:

1. claim the run atomically: ``UPDATE runs SET status='running' ... WHERE id=:id AND
   (status='queued' OR (status='running' AND (lease expired OR task_id=:this task)))``; a run
   that is finished, or running under a live lease elsewhere, is left alone (a duplicate message
   is a no-op);
2. resolve measures and parameters with the engine's registry; look every measure up in the
   cache by (checkpoint sha256 + architecture, dataset sha256, measure id, canonical params,
   options, engine version) and reuse stored results;
3. run ``genscope.analyze`` on the missing measures with a throttled progress callback that
   renews the lease;
4. write the details blobs, then in ONE transaction the measure rows, the report header and
   ``succeeded`` — guarded by the claim, so a run taken over by another worker is not written
   twice.

An engine :class:`~genscope.errors.GenScopeError` fails the run with its code and message; a
failed measure inside a report does not (an out-of-memory measure is retried by the engine with
smaller chunks, then recorded failed as ``out_of_memory``). A full disk while the result blobs are
written fails the run with ``insufficient_storage`` (the blob store removes partial files).
Transient faults (database, broker) are retried with backoff by :func:`analyze_run`. torch is
imported inside the task only, never in the worker's main process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from backend.blobs import BlobStore, StorageFull, is_no_space
from backend.core.config import Settings, get_settings
from backend.core.db import get_engine, session_scope, utcnow
from backend.crud import canonical_json
from backend.models import Checkpoint, DatasetFile, MeasureResultRow, Run
from worker.celery_app import TASK_ANALYZE
from worker.progress import ClaimLost, RunProgress

log = logging.getLogger("genscope.worker")

TRANSIENT = (OperationalError, DBAPIError, BrokerError, ConnectionError, TimeoutError)
MAX_RETRIES = 5


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_run(settings: Settings, run_id: str, task_id: str) -> bool:
    """Atomically take the run for this task; True when it is ours to compute."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.lease_seconds)
    claimable = or_(
        Run.status == "queued",
        and_(Run.status == "running", or_(Run.lease_expires_at < now, Run.task_id == task_id)),
    )
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        result = conn.execute(
            update(Run)
            .where(Run.id == run_id, Run.attempts < settings.max_attempts, claimable)
            .values(
                status="running",
                worker_id=worker_id(),
                task_id=task_id,
                attempts=Run.attempts + 1,
                lease_expires_at=lease,
                started_at=func.coalesce(Run.started_at, now),
                progress=0.0,
                message="starting",
                error_code=None,
                error_message=None,
            )
        )
        if result.rowcount == 1:
            return True
        # Out of attempts (a worker died on it each time): fail it rather than leave it stuck.
        conn.execute(
            update(Run)
            .where(Run.id == run_id, Run.attempts >= settings.max_attempts, claimable)
            .values(
                status="failed",
                error_code="worker_lost",
                error_message=f"the run was started {settings.max_attempts} times and its "
                "worker stopped each time (GENSCOPE_MAX_ATTEMPTS)",
                message="failed: worker lost",
                finished_at=now,
                lease_expires_at=None,
            )
        )
    return False


def fail_run(settings: Settings, run_id: str, task_id: str | None, code: str, message: str) -> None:
    """Mark the run failed with an error code (guarded by the claim when ``task_id`` is set)."""
    conditions = [Run.id == run_id, Run.status.in_(("queued", "running"))]
    if task_id is not None:
        conditions.append(Run.task_id == task_id)
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        conn.execute(
            update(Run)
            .where(*conditions)
            .values(
                status="failed",
                error_code=code,
                error_message=message[:4000],
                message=f"failed: {code}",
                finished_at=utcnow(),
                lease_expires_at=None,
            )
        )


def release_run(settings: Settings, run_id: str, task_id: str) -> None:
    """Give a claimed run back to the queue (before a retry)."""
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        conn.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running", Run.task_id == task_id)
            .values(status="queued", lease_expires_at=None, message="retrying after a fault")
        )


def _key(**parts: Any) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def execute_run(settings: Settings, run_id: str, task_id: str) -> str:
    """Compute one run if it is ours; returns what happened (for logs and tests)."""
    if not claim_run(settings, run_id, task_id):
        log.info("run %s: not claimable (finished, or running elsewhere); nothing to do", run_id)
        return "skipped"
    url = settings.sqlalchemy_url
    blobs = BlobStore(settings.blob_dir)
    with session_scope(url) as session:
        run = session.get(Run, run_id)
        assert run is not None
        checkpoint = session.get(Checkpoint, run.checkpoint_id)
        dataset_row = session.get(DatasetFile, run.dataset_id) if run.dataset_id else None
        if checkpoint is None:
            fail_run(settings, run_id, task_id, "bad_checkpoint", "the checkpoint was deleted")
            return "failed"
        ckpt = {
            "sha256": checkpoint.sha256,
            "arch": checkpoint.arch,
            "arch_config": checkpoint.arch_config,
        }
        if dataset_row is not None:
            data_spec = f"{dataset_row.format}:{blobs.path(dataset_row.sha256)}"
            data_key, data_name = f"sha256:{dataset_row.sha256}", dataset_row.name
        else:
            data_spec, data_key, data_name = run.dataset, f"builtin:{run.dataset}", run.dataset
        names, overrides, options = list(run.measures), dict(run.params), dict(run.options)
        try:
            overrides = _checkpoint_paths(session, blobs, overrides)
        except LookupError as exc:
            fail_run(settings, run_id, task_id, "bad_parameter", str(exc))
            return "failed"

    progress = RunProgress(
        url,
        run_id,
        task_id,
        interval=settings.progress_interval_seconds,
        lease_seconds=settings.lease_seconds,
    )
    try:
        with progress.heartbeat(), _disk_full_fails(settings, run_id, task_id):
            outcome = _compute(
                settings,
                blobs,
                progress,
                run_id,
                ckpt,
                data_spec,
                data_key,
                data_name,
                names,
                overrides,
                options,
            )
    except ClaimLost:
        log.warning("run %s: taken over by another worker; dropping this attempt", run_id)
        return "lost"
    except _DiskFull:
        return "failed"
    if outcome is None:
        return "failed"
    head, results = outcome
    return _finish(settings, run_id, task_id, head, results)


class _DiskFull(Exception):
    """The run was failed as ``insufficient_storage``."""


@contextmanager
def _disk_full_fails(settings: Settings, run_id: str, task_id: str) -> Iterator[None]:
    """Fail the run with ``insufficient_storage`` when the body fills the disk."""
    try:
        yield
    except (StorageFull, OSError) as exc:
        if not isinstance(exc, StorageFull) and not is_no_space(exc):
            raise
        log.error("run %s: the disk is full: %s", run_id, exc)
        fail_run(
            settings,
            run_id,
            task_id,
            "insufficient_storage",
            "the server has no room left to store the results; free disk space in its data "
            "directory and run the analysis again",
        )
        raise _DiskFull() from exc


def _checkpoint_paths(
    session: Any, blobs: BlobStore, overrides: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Replace checkpoint ids in checkpoint-valued parameters (``Param.checkpoint``, e.g.
    ``landscape.interpolate.other``) by the path of that checkpoint's blob.

    Raises:
        LookupError: the checkpoint no longer exists.
    """
    from genscope.measures.registry import get_measure

    out = {}
    for measure_id, values in overrides.items():
        measure = get_measure(measure_id)
        resolved = dict(values)
        for name, value in values.items():
            if value is None or not measure.param(name).checkpoint:
                continue
            row = session.get(Checkpoint, value)
            if row is None:
                raise LookupError(f"{measure_id}.{name}: checkpoint {value} no longer exists")
            resolved[name] = str(blobs.path(row.sha256))
        out[measure_id] = resolved
    return out


def _hide_blob_paths(measure: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint parameter's blob path becomes ``sha256:<hash>`` in the stored result, so
    that reports (and share pages) never show where the server keeps its files."""
    params = dict(data.get("params") or {})
    for p in measure.params:
        path = params.get(p.name)
        if p.checkpoint and isinstance(path, str):
            params[p.name] = f"sha256:{Path(path).name}"
            if data.get(p.name) == path:
                data = {**data, p.name: params[p.name]}
    return {**data, "params": params}


def _compute(
    settings: Settings,
    blobs: BlobStore,
    progress: RunProgress,
    run_id: str,
    ckpt: dict[str, Any],
    data_spec: str,
    data_key: str,
    data_name: str,
    names: list[str],
    overrides: dict[str, dict[str, Any]],
    options: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    import genscope
    from genscope.errors import GenScopeError
    from genscope.measures.context import AnalysisOptions
    from genscope.measures.registry import resolve_measures, resolve_params

    progress(0.0, "loading")
    try:
        selected = resolve_measures(names)
        resolved = resolve_params(selected, overrides)
        opts = AnalysisOptions(
            seed=int(options.get("seed", 0)),
            hessian_samples=int(options.get("hessian_samples", 1000)),
            margin_samples=int(options.get("margin_samples", 10_000)),
            dtype=str(options.get("dtype", "float32")),
            device="auto",
        )
        opts_key = {
            "seed": opts.seed,
            "hessian_samples": opts.hessian_samples,
            "margin_samples": opts.margin_samples,
            "dtype": opts.dtype,
        }
        common = {"model": ckpt, "data": data_key, "options": opts_key}
        engine_version = genscope.__version__
        head_key = _key(**common, engine=engine_version)
        keys = {
            m.id: _key(**common, measure=m.id, params=resolved[m.id], engine=engine_version)
            for m in selected
        }
        cached, head = _cached(settings, list(keys.values()), head_key, run_id, data_name)
        missing = [m for m in selected if keys[m.id] not in cached]
        fresh: dict[str, Any] = {}
        if missing or head is None:
            from worker.sandboxed import analyze_in_sandbox

            todo = missing or selected
            report = analyze_in_sandbox(  # loading and computation in the sandboxed child
                settings,
                progress,
                blobs.path(ckpt["sha256"]),
                ckpt["arch"],
                ckpt["arch_config"],
                data_spec,
                [m.id for m in todo],
                {m.id: resolved[m.id] for m in todo},
                {**opts_key, "device": opts.device},
            )
            fresh = report.pop("measures")
            report["data"]["name"] = data_name
            head = report
        else:
            progress(1.0, "all measures found in the cache")
    except GenScopeError as exc:
        fail_run(settings, run_id, progress.task_id, exc.code, exc.message)
        return None
    except SoftTimeLimitExceeded:
        fail_run(
            settings,
            run_id,
            progress.task_id,
            "time_limit",
            f"the analysis ran past GENSCOPE_TASK_SOFT_TIME_LIMIT "
            f"({settings.task_soft_time_limit} s); ask for fewer or cheaper measures",
        )
        return None
    except (ClaimLost, *TRANSIENT):
        raise
    except Exception as exc:
        log.error("run %s: the analysis raised:\n%s", run_id, traceback.format_exc())
        fail_run(
            settings, run_id, progress.task_id, "analysis_failed", f"{type(exc).__name__}: {exc}"
        )
        return None
    head["settings"] = {**head.get("settings", {}), "head_key": head_key}
    results = []
    for position, m in enumerate(selected):
        if m.id in fresh:
            data = _hide_blob_paths(m, fresh[m.id])
            results.append(
                {
                    "position": position,
                    "measure_id": m.id,
                    "data": data,
                    "blob": blobs.put_json(data),
                    "cache_key": keys[m.id],
                    "cached_from": None,
                }
            )
        else:
            row = cached[keys[m.id]]
            results.append(
                {
                    "position": position,
                    "measure_id": m.id,
                    "data": blobs.get_json(row.blob_sha256),
                    "blob": row.blob_sha256,
                    "cache_key": keys[m.id],
                    "cached_from": row.run_id,
                }
            )
    return head, results


def _cached(
    settings: Settings, keys: list[str], head_key: str, run_id: str, data_name: str
) -> tuple[dict[str, MeasureResultRow], dict[str, Any] | None]:
    """Stored successful results for these cache keys, and a report header for this run.

    The header comes from a run of the same user when there is one; a header stored by another
    user's run (same content, so the same ``head_key``) is used only with its user-given fields
    rewritten from this run (:func:`_own_head`): a cached report never shows another user's
    names.
    """
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(
            select(MeasureResultRow)
            .join(Run, Run.id == MeasureResultRow.run_id)
            .where(
                MeasureResultRow.cache_key.in_(keys),
                MeasureResultRow.status == "ok",
                Run.status == "succeeded",
            )
            .order_by(MeasureResultRow.id)
        )
        found = {row.cache_key: row for row in rows}
        this = session.get(Run, run_id)
        owner = this.user_id if this is not None else None
        head_run = session.scalars(
            select(Run)
            .where(Run.head_key == head_key, Run.status == "succeeded")
            .order_by((Run.user_id == owner).desc(), Run.finished_at.desc())
            .limit(1)
        ).first()
        head = dict(head_run.report_head) if head_run and head_run.report_head else None
    return found, None if head is None else _own_head(head, data_name)


def _own_head(head: dict[str, Any], data_name: str) -> dict[str, Any]:
    """A stored report header made this run's: the only user-given field of a header is the
    dataset's display name (``data.name``; the model block holds content hashes and the
    architecture, ``settings`` the engine's own values), so it is set from this run."""
    data = dict(head.get("data") or {})
    data["name"] = data_name
    return {**head, "data": data}


def _finish(
    settings: Settings,
    run_id: str,
    task_id: str,
    head: dict[str, Any],
    results: list[dict[str, Any]],
) -> str:
    """Results and status in one transaction, only if the run is still ours."""
    now = utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        claimed = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running", Run.task_id == task_id)
            .values(
                status="succeeded",
                progress=1.0,
                message="done",
                finished_at=now,
                lease_expires_at=None,
                head_key=head["settings"]["head_key"],
                report_head=head,
            )
        )
        if getattr(claimed, "rowcount", 0) != 1:
            session.rollback()
            log.warning("run %s: no longer ours at the end; results dropped", run_id)
            return "lost"
        for r in results:
            data = r["data"]
            error = data.get("error") or {}
            value = data.get("value")
            session.add(
                MeasureResultRow(
                    run_id=run_id,
                    position=r["position"],
                    measure_id=r["measure_id"],
                    value=float(value) if isinstance(value, (int, float)) else None,
                    status=str(data.get("status", "ok")),
                    error_code=error.get("code"),
                    error_message=error.get("message"),
                    seconds=float(data.get("seconds") or 0.0),
                    params=data.get("params") or {},
                    cache_key=r["cache_key"],
                    blob_sha256=r["blob"],
                    cached_from=r["cached_from"],
                )
            )
    log.info("run %s: succeeded", run_id)
    return "succeeded"


@shared_task(
    name=TASK_ANALYZE,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
)
def analyze_run(self: Any, run_id: str) -> str:
    """Celery entry point: compute run ``run_id``; retry transient faults with backoff."""
    settings: Settings = getattr(self.app.conf, "genscope_settings", None) or get_settings()
    task_id = str(self.request.id)
    try:
        return execute_run(settings, run_id, task_id)
    except TRANSIENT as exc:
        retries = int(self.request.retries or 0)
        log.warning("run %s: transient fault (%s), retry %d", run_id, exc, retries + 1)
        try:
            if retries >= MAX_RETRIES:
                fail_run(settings, run_id, task_id, "transient_error", f"gave up after: {exc}")
                return "failed"
            release_run(settings, run_id, task_id)
        except Exception:
            log.exception("run %s: could not record the fault; recovery will handle it", run_id)
        raise self.retry(exc=exc, countdown=min(300, 2 * 2**retries)) from exc


# --- worker life cycle (connected when a worker loads this module) ------------------------------

from celery.signals import worker_process_init, worker_ready, worker_shutdown  # noqa: E402

from backend.core.db import dispose_engines  # noqa: E402
from backend.models import WorkerBeat  # noqa: E402

_reaper_stop = None
_reaper_ident: str | None = None


@worker_process_init.connect
def _init_child(**_kwargs: Any) -> None:
    """In each pool child: fresh DB connections, and the only place CUDA is touched."""
    dispose_engines()
    threads = get_settings().torch_threads
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "":
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.init()
                log.info("worker child %s uses %s", os.getpid(), torch.cuda.get_device_name(0))
        except Exception:
            log.exception("CUDA initialisation failed; the analyses will run on the CPU")


def _beat(settings: Settings, ident: str, queues: str) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(WorkerBeat, ident)
        if row is None:
            session.add(WorkerBeat(worker_id=ident, queues=queues, last_seen=utcnow()))
        else:
            row.last_seen = utcnow()


def _reap(settings: Settings, ident: str, queues: str, stop: Any) -> None:
    from backend.queue import RunQueue
    from backend.recovery import recover

    sender = RunQueue(settings)
    while True:
        try:
            _beat(settings, ident, queues)
            recover(settings, sender)
        except Exception:
            log.exception("recovery pass failed; trying again later")
        if stop.wait(settings.recovery_interval_seconds):
            return


@worker_ready.connect
def _start_reaper(sender: Any = None, **_kwargs: Any) -> None:
    """In the worker's main process: heartbeat + recovery of lost runs, now and periodically."""
    import threading

    global _reaper_stop, _reaper_ident
    settings = get_settings()
    try:
        queues = ",".join(sorted(sender.app.amqp.queues.consume_from or ()))
    except AttributeError:
        queues = ""
    ident = f"{getattr(sender, 'hostname', socket.gethostname())}:{os.getpid()}"
    _reaper_ident = ident
    _reaper_stop = threading.Event()
    threading.Thread(
        target=_reap,
        args=(settings, ident, queues, _reaper_stop),
        name="genscope-reaper",
        daemon=True,
    ).start()


@worker_shutdown.connect
def _stop_reaper(**_kwargs: Any) -> None:
    """Stop the recovery thread and say goodbye in the health table."""
    if _reaper_stop is not None:
        _reaper_stop.set()
    if _reaper_ident is not None:
        try:
            with session_scope(get_settings().sqlalchemy_url) as session:
                row = session.get(WorkerBeat, _reaper_ident)
                if row is not None:
                    session.delete(row)
        except Exception:
            log.warning("could not remove this worker from the health table", exc_info=True)
