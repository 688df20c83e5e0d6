"""The worker's life cycle, connected to Celery's signals when the worker loads its tasks.

* each pool child (``worker_process_init``): fresh database connections (engines are not shared
  across a fork), the torch thread count, and the only place CUDA is initialised (Celery docs,
  "Workers"; a CUDA context does not survive a fork);
* the main process once ready (``worker_ready``): a thread that writes this worker's heartbeat to
  the health table (``worker_beats``) and runs :func:`backend.recovery.recover`, now and every
  ``GENSCOPE_RECOVERY_INTERVAL_SECONDS``;
* at shutdown (``worker_shutdown``): that thread stops and the worker leaves the health table.

The death of a ``genscope serve`` parent is handled where the worker child is started
(:func:`backend.recovery.die_with_parent`); its claimed run is recovered from its expired lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from backend.core.config import Settings, get_settings
from backend.core.db import dispose_engines, session_scope, utcnow
from backend.models import WorkerBeat

log = logging.getLogger("genscope.worker")

_reaper_stop: threading.Event | None = None
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


def beat(settings: Settings, ident: str, queues: str) -> None:
    """Write this worker's heartbeat (``last_seen`` now) to the health table."""
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(WorkerBeat, ident)
        if row is None:
            session.add(WorkerBeat(worker_id=ident, queues=queues, last_seen=utcnow()))
        else:
            row.last_seen = utcnow()


def _reap(settings: Settings, ident: str, queues: str, stop: threading.Event) -> None:
    """Heartbeat and recovery until ``stop`` is set."""
    from backend.queue import RunQueue
    from backend.recovery import recover

    sender = RunQueue(settings)
    while True:
        try:
            beat(settings, ident, queues)
            recover(settings, sender)
        except Exception:
            log.exception("recovery pass failed; trying again later")
        if stop.wait(settings.recovery_interval_seconds):
            return


@worker_ready.connect
def _start_reaper(sender: Any = None, **_kwargs: Any) -> None:
    """In the worker's main process: heartbeat + recovery of lost runs, now and periodically."""
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
