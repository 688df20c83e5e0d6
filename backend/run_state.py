"""The run's status: its values, the transitions allowed between them, and the writes that
perform them. The run row is the source of truth of an analysis (ARCHITECTURE.md); this module
is the only code that writes its ``status``.

The allowed transitions are declared once, in :data:`ALLOWED_SOURCES` (for each status, the
statuses a run may leave to enter it):

======================  =========================================================================
``queued``              created (:data:`INITIAL`); re-queued from ``running`` by recovery after
                        its worker was lost, or by the task before a retry after a transient fault
``running``             claimed from ``queued``; re-claimed from ``running`` by the same task (a
                        retried message) or by another task once the lease has expired
``succeeded``           from ``running``, by the task holding the claim, with the report
``failed``              from ``queued`` or ``running``: an error, a lost worker with no attempts
                        left
======================  =========================================================================

Every transition is one atomic compare-and-set, ``UPDATE runs SET status=:target, ... WHERE
id=:id AND status IN (:allowed sources) AND <guard>`` (the guard is e.g. "this task holds the
claim" or "the lease has expired"), so a stale worker cannot overwrite a newer state. A refused
transition changes nothing: the function returns False and logs what the run's status was.

The functions take a SQLAlchemy ``Connection`` or ``Session`` and run inside the caller's
transaction (a success is written in the same transaction as the run's result rows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

from sqlalchemy import ColumnElement, Connection, func, or_, select, update
from sqlalchemy.orm import Session

from backend.core.db import utcnow
from backend.models import Run

log = logging.getLogger("genscope.run_state")

#: The statuses of a run (the API's ``RunStatus``).
Status = Literal["queued", "running", "succeeded", "failed"]

QUEUED: Final[Status] = "queued"
RUNNING: Final[Status] = "running"
SUCCEEDED: Final[Status] = "succeeded"
FAILED: Final[Status] = "failed"

#: For each status, the statuses from which a run may enter it: one row per status (a new status
#: is its name in :data:`Status`, its constant and its row here).
ALLOWED_SOURCES: Final[Mapping[Status, frozenset[Status]]] = {
    QUEUED: frozenset({RUNNING}),
    RUNNING: frozenset({QUEUED, RUNNING}),
    SUCCEEDED: frozenset({RUNNING}),
    FAILED: frozenset({QUEUED, RUNNING}),
}

#: Every status, in the order of :data:`Status`.
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
#: The status a run is created in.
INITIAL: Final[Status] = QUEUED
#: The statuses a run never leaves (no transition starts from them).
FINISHED: Final[frozenset[Status]] = frozenset(
    s for s in STATUSES if not any(s in sources for sources in ALLOWED_SOURCES.values())
)

#: What a run's status is written through: a Core connection or an ORM session.
Database = Connection | Session


def allowed(source: str, target: str) -> bool:
    """Whether the table allows a run in ``source`` to enter ``target``.

    >>> allowed("queued", "running"), allowed("succeeded", "queued")
    (True, False)
    """
    return any(target == t and source in sources for t, sources in ALLOWED_SOURCES.items())


def _move(
    db: Database,
    run_id: str,
    target: Status,
    *,
    event: str,
    guard: Iterable[ColumnElement[bool]] = (),
    values: Mapping[str, Any],
) -> bool:
    """The compare-and-set behind every transition; True when the run entered ``target``."""
    if "status" in values:
        raise ValueError("the status is set by the transition, not by its values")
    sources = sorted(ALLOWED_SOURCES[target])
    result = db.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(sources), *guard)
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) == 1:
        return True
    current = db.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
    if current is None:
        why = "the run does not exist"
    elif current in sources:
        why = f"the run is {current} but the guard did not hold"
    else:
        why = f"the run is {current}"
    log.info("run %s: %s (-> %s) refused: %s", run_id, event, target, why)
    return False


def _claimable(task_id: str, now: datetime) -> ColumnElement[bool]:
    """A queued run, a running run whose lease has expired, or this task's own claim."""
    return or_(Run.status == QUEUED, Run.lease_expires_at < now, Run.task_id == task_id)


def claim(
    db: Database,
    *,
    run_id: str,
    task_id: str,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> bool:
    """``queued``/``running`` → ``running`` for ``task_id``: a queued run, a running run whose
    lease has expired, or one this task already holds (a retried message); only while the run
    has attempts left. Counts an attempt and starts the lease."""
    now = now or utcnow()
    return _move(
        db,
        run_id,
        RUNNING,
        event="claim",
        guard=(Run.attempts < max_attempts, _claimable(task_id, now)),
        values={
            "worker_id": worker_id,
            "task_id": task_id,
            "attempts": Run.attempts + 1,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "started_at": func.coalesce(Run.started_at, now),
            "progress": 0.0,
            "message": "starting",
            "error_code": None,
            "error_message": None,
        },
    )


def fail_out_of_attempts(
    db: Database, *, run_id: str, task_id: str, max_attempts: int, now: datetime | None = None
) -> bool:
    """``queued``/``running`` → ``failed`` with ``worker_lost``: a run that :func:`claim` would
    take but that has used its attempts (a worker died on it each time)."""
    now = now or utcnow()
    return _move(
        db,
        run_id,
        FAILED,
        event="fail: out of attempts",
        guard=(Run.attempts >= max_attempts, _claimable(task_id, now)),
        values={
            "error_code": "worker_lost",
            "error_message": f"the run was started {max_attempts} times and its worker stopped "
            "each time (GENSCOPE_MAX_ATTEMPTS)",
            "message": "failed: worker lost",
            "finished_at": now,
            "lease_expires_at": None,
        },
    )


def fail(
    db: Database,
    *,
    run_id: str,
    code: str,
    message: str,
    task_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """``queued``/``running`` → ``failed`` with an error code and message; guarded by the claim
    when ``task_id`` is given (a task that lost the run cannot fail it)."""
    guard = [] if task_id is None else [Run.task_id == task_id]
    return _move(
        db,
        run_id,
        FAILED,
        event=f"fail: {code}",
        guard=guard,
        values={
            "error_code": code,
            "error_message": message[:4000],
            "message": f"failed: {code}",
            "finished_at": now or utcnow(),
            "lease_expires_at": None,
        },
    )


def release(db: Database, *, run_id: str, task_id: str) -> bool:
    """``running`` → ``queued``: the task holding the claim gives the run back before a retry."""
    return _move(
        db,
        run_id,
        QUEUED,
        event="release for a retry",
        guard=(Run.task_id == task_id,),
        values={"lease_expires_at": None, "message": "retrying after a fault"},
    )


def succeed(
    db: Database,
    *,
    run_id: str,
    task_id: str,
    head_key: str,
    report_head: dict[str, Any],
    now: datetime | None = None,
) -> bool:
    """``running`` → ``succeeded`` with the report header, only while ``task_id`` holds the
    claim: a worker whose run was re-queued (or re-claimed) meanwhile is refused."""
    return _move(
        db,
        run_id,
        SUCCEEDED,
        event="succeed",
        guard=(Run.task_id == task_id,),
        values={
            "progress": 1.0,
            "message": "done",
            "finished_at": now or utcnow(),
            "lease_expires_at": None,
            "head_key": head_key,
            "report_head": report_head,
        },
    )


def requeue_lost(db: Database, *, run_id: str, max_attempts: int, now: datetime) -> bool:
    """``running`` → ``queued`` by recovery: the lease expired (its worker died) and the run has
    attempts left. The worker and task are cleared; the run is to be sent again."""
    return _move(
        db,
        run_id,
        QUEUED,
        event="re-queue a lost run",
        guard=(Run.lease_expires_at < now, Run.attempts < max_attempts),
        values={
            "lease_expires_at": None,
            "worker_id": None,
            "task_id": None,
            "message": "re-queued: the worker running it stopped",
            "enqueued_at": now,
        },
    )


def fail_lost(
    db: Database, *, run_id: str, attempts: int, max_attempts: int, now: datetime
) -> bool:
    """``running`` → ``failed`` with ``worker_lost`` by recovery: the lease expired and the run
    has used its attempts (``attempts``, as recovery read it, goes into the message)."""
    return _move(
        db,
        run_id,
        FAILED,
        event="fail a lost run",
        guard=(Run.lease_expires_at < now, Run.attempts >= max_attempts),
        values={
            "lease_expires_at": None,
            "worker_id": None,
            "task_id": None,
            "error_code": "worker_lost",
            "error_message": f"the worker stopped during the run {attempts} times "
            f"(GENSCOPE_MAX_ATTEMPTS={max_attempts}); the last attempt left no result",
            "message": "failed: worker lost",
            "finished_at": now,
        },
    )


def renew(db: Database, *, run_id: str, task_id: str, lease_until: datetime, **values: Any) -> bool:
    """Not a transition: extend the lease (and write ``values``, e.g. progress and message)
    while the run is ``running`` under ``task_id``'s claim. False when the claim is lost."""
    if "status" in values:
        raise ValueError("renew writes no status; use a transition")
    result = db.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RUNNING, Run.task_id == task_id)
        .values(lease_expires_at=lease_until, **values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1
