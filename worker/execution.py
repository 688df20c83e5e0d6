"""The execution of one run, knowing nothing of Celery (:func:`execute_run`):

1. claim the run atomically (:func:`backend.run_state.claim`): a queued run, or a running one
   whose lease has expired or that this task already holds; a run that is finished, or running
   under a live lease elsewhere, is left alone (a duplicate message is a no-op);
2. resolve measures and parameters with the engine's registry; look every measure up in the
   result cache (:mod:`worker.result_cache`) and reuse stored results;
3. run the analysis of the missing measures in the sandboxed child (:mod:`worker.sandboxed`)
   with a throttled progress callback that renews the lease (:mod:`worker.progress`);
4. write the details blobs, then in ONE transaction the measure rows, the report header and
   ``succeeded``, guarded by the claim, so a run taken over by another worker is not written
   twice.

An engine :class:`~genscope.errors.GenScopeError` fails the run with its code and message; a
failed measure inside a report does not (an out-of-memory measure is retried by the engine with
smaller chunks, then recorded failed as ``out_of_memory``). A full disk while the result blobs are
written fails the run with ``insufficient_storage`` (the blob store removes partial files).
Transient faults (database, broker, :data:`TRANSIENT`) propagate, for the task to retry them.
torch is imported inside the functions only, never at import.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from backend import run_state
from backend.blobs import BlobStore, StorageFull, is_no_space
from backend.core.config import Settings
from backend.core.db import get_engine, session_scope
from backend.models import Checkpoint, DatasetFile, Run
from worker.progress import ClaimLost, RunProgress
from worker.result_cache import add_result_rows, assemble_results, cache_key, lookup

log = logging.getLogger("genscope.worker")

#: Faults worth a retry: the database or the broker did not answer.
TRANSIENT = (OperationalError, DBAPIError, BrokerError, ConnectionError, TimeoutError)


def worker_id() -> str:
    """This process, as the run row names its worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_run(settings: Settings, run_id: str, task_id: str) -> bool:
    """Atomically take the run for this task; True when it is ours to compute.

    A run that would be claimable but has used ``max_attempts`` (a worker died on it each time)
    is failed as ``worker_lost`` rather than left stuck.
    """
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        if run_state.claim(
            conn,
            run_id=run_id,
            task_id=task_id,
            worker_id=worker_id(),
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        ):
            return True
        run_state.fail_out_of_attempts(
            conn, run_id=run_id, task_id=task_id, max_attempts=settings.max_attempts
        )
    return False


def fail_run(settings: Settings, run_id: str, task_id: str | None, code: str, message: str) -> None:
    """Mark the run failed with an error code (guarded by the claim when ``task_id`` is set)."""
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        run_state.fail(conn, run_id=run_id, code=code, message=message, task_id=task_id)


def release_run(settings: Settings, run_id: str, task_id: str) -> None:
    """Give a claimed run back to the queue (before a retry)."""
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        run_state.release(conn, run_id=run_id, task_id=task_id)


def execute_run(settings: Settings, run_id: str, task_id: str) -> str:
    """Compute one run if it is ours; returns what happened (for logs and tests):
    ``succeeded``, ``failed``, ``skipped`` (not claimable) or ``lost`` (taken over)."""
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
    """The report header and the results of the run (cached or computed); None when the run
    was failed."""
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
        head_key = cache_key(**common, engine=engine_version)
        keys = {
            m.id: cache_key(**common, measure=m.id, params=resolved[m.id], engine=engine_version)
            for m in selected
        }
        cached, head = lookup(settings, list(keys.values()), head_key, run_id, data_name)
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
    return head, assemble_results(blobs, selected, keys, fresh, cached)


def _finish(
    settings: Settings,
    run_id: str,
    task_id: str,
    head: dict[str, Any],
    results: list[dict[str, Any]],
) -> str:
    """Results and status in one transaction, only if the run is still ours."""
    with session_scope(settings.sqlalchemy_url) as session:
        if not run_state.succeed(
            session,
            run_id=run_id,
            task_id=task_id,
            head_key=head["settings"]["head_key"],
            report_head=head,
        ):
            session.rollback()
            log.warning("run %s: no longer ours at the end; results dropped", run_id)
            return "lost"
        add_result_rows(session, run_id, results)
    log.info("run %s: succeeded", run_id)
    return "succeeded"
