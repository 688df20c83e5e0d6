"""The Celery application for the service's broker, shared by the API and the worker.

Both floors use this module: the API (``backend.queue``) builds a producer that sends tasks by
name, the worker (``worker.celery_app``) builds the same app with its task module included.
Importing it imports neither the tasks nor torch. Reliability settings (Celery docs, "Tasks" and
"Optimizing"): ``acks_late`` + ``task_reject_on_worker_lost`` + prefetch 1, soft/hard time limits
below the broker's visibility timeout, results ignored (the run row is the result).

Broker outages: a worker and a producer reconnect instead of exiting
(``broker_connection_retry``, ``broker_connection_max_retries=None``: a worker outlives any
outage, retrying every 2, 4, ... up to 30 s). A task running when the connection drops is NOT
cancelled (``worker_cancel_long_running_tasks_on_connection_loss=False``): its run is guarded by
the database lease, so it finishes and stores its results once; the copy of its message that the
broker may redeliver later finds the run finished and does nothing. Messages the broker lost
(Redis restarted without persistence) are re-sent from the database by recovery
(``backend.recovery``), which every worker runs periodically.

The embedded default broker is kombu's SQLAlchemy transport on a SQLite file
(``sqla+sqlite:///<data_dir>/broker.sqlite``): it works across processes (the API and the worker
child) because each ``get`` is one ``BEGIN IMMEDIATE`` transaction, so a message is delivered to
exactly one consumer and never read half-written (the filesystem transport moves files without a
lock and can hand a consumer a message that is still being written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Queue

from backend.core.config import Settings

TASK_ANALYZE = "genscope.analyze_run"
"""The name the analysis task is registered and sent under."""

QUEUES = ("gpu", "cpu")
"""The queues a run can be sent to; ``cpu`` is the default."""


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app for ``settings``' broker.

    ``include`` names the task modules a worker imports when it starts; a producer leaves it
    empty and sends tasks by name.
    """
    app = Celery("genscope", broker=settings.celery_broker_url, include=list(include))
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.embedded_broker:
        # kombu passes these to SQLAlchemy's create_engine: wait on a locked SQLite file.
        transport_options = {"connect_args": {"timeout": 30}}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_ignore_result=True,
        result_backend=None,
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
    )
    app.conf.genscope_settings = settings
    return app
