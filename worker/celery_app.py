"""The worker's Celery application: the service's broker app with the task module included.

The broker configuration and the task names live in :mod:`backend.broker`, below both the API and
the worker; this module adds what only a worker needs, the task code (``worker.tasks``, loaded by
Celery through ``include`` when a worker starts). ``TASK_ANALYZE`` and ``QUEUES`` are the
broker's, re-exported for the worker's code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from backend.broker import QUEUES, TASK_ANALYZE
from backend.broker import make_celery as make_broker_app
from backend.core.config import Settings, get_settings

__all__ = ["QUEUES", "TASK_ANALYZE", "TASK_MODULES", "make_celery"]

TASK_MODULES = ("worker.tasks",)
"""The modules a worker imports at start-up to register its tasks."""


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``' broker that registers the worker's tasks when it starts."""
    return make_broker_app(settings, include=TASK_MODULES)


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``celery -A worker.celery_app`` finds ``app`` here, built from the environment."""
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = make_celery(get_settings())
        return _app
    raise AttributeError(name)
