"""Sending runs to the broker by task name (the API never imports task code or torch).

:class:`RunQueue` is what the routes and recovery use; it is a dependency (``QueueDep``) so
tests can swap it. A send that fails leaves the run ``queued`` in the database: recovery re-sends
it (the task is idempotent, so a duplicate message is harmless).

Broker down: ``POST /api/runs`` still answers 202 with the run stored ``queued`` (the row is
committed before the send; the send gives up after its few retries, about two seconds), and the
first recovery pass after ``GENSCOPE_REQUEUE_GRACE_SECONDS`` once the broker is back sends it.
Nothing is half-stored: the row is the whole run, the message only a wake-up call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from backend.core.config import Settings, redact_url

log = logging.getLogger("genscope.api")


class RunQueue:
    """A producer for the analysis task on the configured broker."""

    def __init__(self, settings: Settings) -> None:
        from backend.broker import TASK_ANALYZE, make_celery

        self.settings = settings
        self.task_name = TASK_ANALYZE
        self.celery = make_celery(settings)

    def send(self, run_id: str, queue: str) -> str:
        """Enqueue one run by id; returns the message's task id."""
        result = self.celery.send_task(
            self.task_name,
            args=[run_id],
            queue=queue,
            routing_key=queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )
        return str(result.id)

    def ping(self, timeout: float = 2.0) -> dict[str, Any]:
        """Whether the broker accepts a connection."""
        url = redact_url(self.settings.celery_broker_url)
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
            return {"ok": True, "url": url}
        except Exception as exc:  # any transport error means "not reachable"
            return {"ok": False, "url": url, "error": f"{type(exc).__name__}: {exc}"[:300]}


_QUEUES: dict[str, RunQueue] = {}
_LOCK = threading.Lock()


def get_run_queue(settings: Settings) -> RunQueue:
    """One producer per distinct configuration (cached)."""
    key = settings.model_dump_json()
    with _LOCK:
        queue = _QUEUES.get(key)
        if queue is None:
            queue = _QUEUES[key] = RunQueue(settings)
        return queue
