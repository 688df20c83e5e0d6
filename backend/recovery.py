"""Recovery of lost runs from the database, the source of truth (ARCHITECTURE.md).

Run by the API on start-up and by every worker on start-up and then periodically:

* a run left ``running`` whose lease has expired (its worker died) is re-queued and re-sent, or
  marked ``failed`` with ``worker_lost`` once it has used its attempts;
* a run ``queued`` for longer than the grace period is re-sent: its message may have been lost
  with a broker restart. The task is idempotent, so a duplicate message is harmless.

A worker child started by ``genscope serve`` dies with it (:func:`die_with_parent`): a ``kill -9``
of ``serve`` leaves no orphaned worker computing beside the next one; its claimed run is then
recovered from its expired lease as above.

On start-up the API also removes partial uploads (:func:`remove_partial_uploads`): files left in
the blob store's ``tmp/`` by a process that was killed mid-upload.

While the broker is down a pass stops at the first send that fails (each failed send waits for
the producer's retries): the runs stay ``queued`` in the database and the next pass after the
grace period sends them again, so a broker restarted without its messages loses no run.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from kombu.exceptions import OperationalError as BrokerUnreachable

from backend import crud, run_state
from backend.blobs import BlobStore
from backend.core.config import Settings
from backend.core.db import session_scope, utcnow

log = logging.getLogger("genscope.recovery")

# the broker cannot be reached (kombu wraps transport errors in its OperationalError)
_BROKER_DOWN = (BrokerUnreachable, ConnectionError, TimeoutError, OSError)


class Sender(Protocol):
    def send(self, run_id: str, queue: str) -> str: ...


def recover(settings: Settings, sender: Sender | None) -> dict[str, Any]:
    """Re-queue or fail runs lost by dead workers and re-send stale queued runs."""
    now = utcnow()
    to_send: list[tuple[str, str]] = []
    failed: list[str] = []
    with session_scope(settings.sqlalchemy_url) as session:
        for run in crud.expired_running_runs(session, now=now):
            run_id, queue, attempts = run.id, run.queue, run.attempts
            if attempts >= settings.max_attempts:
                if run_state.fail_lost(
                    session,
                    run_id=run_id,
                    attempts=attempts,
                    max_attempts=settings.max_attempts,
                    now=now,
                ):
                    failed.append(run_id)
            elif run_state.requeue_lost(
                session, run_id=run_id, max_attempts=settings.max_attempts, now=now
            ):
                to_send.append((run_id, queue))
        older_than = now - timedelta(seconds=settings.requeue_grace_seconds)
        for run in crud.stale_queued_runs(session, older_than=older_than):
            run.enqueued_at = now
            to_send.append((run.id, run.queue))
    sent = 0
    if sender is not None:
        for run_id, queue in to_send:
            try:
                sender.send(run_id, queue)
                sent += 1
            except _BROKER_DOWN as exc:
                log.warning(
                    "could not re-send run %s (%s: %s); it and the %d after it stay queued for "
                    "the next recovery pass",
                    run_id,
                    type(exc).__name__,
                    exc,
                    len(to_send) - to_send.index((run_id, queue)) - 1,
                )
                break
            except Exception:
                log.exception("could not re-send run %s; it stays queued", run_id)
    if to_send or failed:
        log.warning("recovery: %d runs re-sent, %d failed as lost", sent, len(failed))
    return {"resent": [r for r, _ in to_send], "failed": failed}


def remove_partial_uploads(settings: Settings) -> int:
    """Delete the blob store's temp files that no live process is writing (the partial uploads of
    a killed or crashed API process); another API process's uploads in progress are kept
    (:meth:`backend.blobs.BlobStore.remove_partial_uploads`). Returns how many were removed."""
    removed = BlobStore(settings.blob_dir).remove_partial_uploads()
    if removed:
        log.warning("start-up: removed %d partial uploads left in %s", len(removed), "blobs/tmp")
    return len(removed)


#: ``prctl`` option: the signal the kernel sends this process when its parent thread exits.
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGQUIT) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` making the child receive ``sig`` when the
    process that started it dies, however it dies (``prctl(PR_SET_PDEATHSIG)``, Linux; it
    survives ``exec``). None where ``prctl`` does not exist: there is nothing to install.

    The default is SIGQUIT, Celery's cold shutdown: the worker stops its pool at once and the
    run it held is recovered from its lease (SIGTERM would let it finish first, beside the
    worker of the next ``serve``). A parent already gone when the child starts is noticed too:
    the child then exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def install() -> None:  # runs in the child between fork and exec: no locks, no logging
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(70)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return install
