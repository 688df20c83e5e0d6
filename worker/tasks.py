"""The Celery entry: the one analysis task, thin, idempotent, taking a run id (Celery docs,
"Tasks").

:func:`analyze_run` calls :func:`worker.execution.execute_run`, which claims the run, computes
it and stores the report, and knows nothing of Celery; transient faults (database, broker) are
retried here with backoff, the claim released before each retry. Loading this module (the Celery
app's ``include``) also connects the worker's life-cycle signals (:mod:`worker.lifecycle`).
torch is imported inside the task only, never in the worker's main process.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from backend.core.config import Settings, get_settings
from worker import lifecycle  # noqa: F401  (connects the worker's signals)
from worker.celery_app import TASK_ANALYZE
from worker.execution import TRANSIENT, claim_run, execute_run, fail_run, release_run

__all__ = ["MAX_RETRIES", "analyze_run", "claim_run", "execute_run", "fail_run", "release_run"]

log = logging.getLogger("genscope.worker")

MAX_RETRIES = 5


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
