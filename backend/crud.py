"""Data access of the service: keyword-only functions over a SQLAlchemy session.

They never see HTTP types; a missing or foreign row raises :class:`NotFound` (another user's id
answers exactly like an unknown id). Routes call them, and so can the dashboard.

For the dashboard (``frontend/pages.py``):

* ``get_run(session, *, run_id, user) -> Run`` and ``list_runs(session, *, user, offset, limit,
  status=None) -> (runs, count)``
* ``run_report(*, run, blobs) -> dict | None``: the run's full report (schema genscope.report/1)
  once it has succeeded, assembled from the stored header and the per-measure blobs
* ``run_public(*, run, blobs, with_report) -> dict``: the JSON the API answers for a run
* ``get_comparison(session, *, comparison_id, user) -> Comparison``,
  ``comparison_runs(session, *, comparison) -> list[Run]`` (in the comparison's order) and
  ``get_comparison_by_share_token(session, *, token) -> Comparison | None`` (None when unknown or
  revoked)
* ``list_checkpoints(session, *, user, offset, limit)``, ``list_datasets(session, *, user)``
* ``measure_values(session, *, run_ids) -> {run_id: {measure_id: value}}``: the queryable scalars

Use them with the dependency aliases of :mod:`backend.api.deps` (``SessionDep``, ``CurrentUser``,
``SettingsDep``, ``BlobsDep``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from backend import run_state
from backend.blobs import BlobStore
from backend.core.db import utcnow
from backend.core.errors import NotFound, ServiceError
from backend.core.security import hash_token, new_token
from backend.models import (
    ApiToken,
    Checkpoint,
    Comparison,
    DatasetFile,
    MeasureResultRow,
    Run,
    ShareLink,
    User,
    WorkerBeat,
    checkpoint_config_key,
)

LOCAL_USER = "local"


def _rowcount(result: Any) -> int:
    """Rows touched by an UPDATE (``CursorResult.rowcount``)."""
    return int(getattr(result, "rowcount", 0) or 0)


# --- users and tokens -------------------------------------------------------------------------


def get_or_create_local_user(session: Session) -> User:
    """The single user of the embedded default (auth off)."""
    user = session.scalar(select(User).where(User.name == LOCAL_USER))
    if user is None:
        user = User(name=LOCAL_USER)
        session.add(user)
        session.flush()
    return user


def create_user(session: Session, *, name: str) -> tuple[User, str]:
    """A new user with one API token; the token is returned once and only its hash is kept."""
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ServiceError("conflict", f"user {name!r} already exists")
    user = User(name=name)
    session.add(user)
    session.flush()
    return user, create_token(session, user=user)


def create_token(session: Session, *, user: User) -> str:
    token = new_token()
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    session.flush()
    return token


def get_user_by_token(session: Session, *, token: str) -> User | None:
    """The active user owning an unrevoked token, or None."""
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None or not row.user.is_active:
        return None
    return row.user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def revoke_user_tokens(session: Session, *, name: str) -> int:
    """Revoke every token of the user, and every share link of the user's comparisons (a link
    lives no longer than its owner's access); returns how many tokens were active."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound("user", name)
    now = utcnow()
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    owned = select(Comparison.id).where(Comparison.user_id == user.id)
    session.execute(
        update(ShareLink)
        .where(ShareLink.comparison_id.in_(owned), ShareLink.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return _rowcount(result)


def has_access(session: Session, *, user: User) -> bool:
    """Whether ``user`` can still use the service: active, and either holding an unrevoked
    token or never having had one (the local user of the embedded default)."""
    if not user.is_active:
        return False
    any_token = exists().where(ApiToken.user_id == user.id)
    live_token = exists().where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    return bool(session.scalar(select(or_(~any_token, live_token))))


# --- checkpoints and datasets ------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON: the form used in cache keys and equality of configs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _same_config(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return canonical_json(a or None) == canonical_json(b or None)


def find_checkpoint(
    session: Session,
    *,
    sha256: str,
    arch: str | None,
    arch_config: dict[str, Any] | None,
    user: User | None = None,
) -> Checkpoint | None:
    """An already stored checkpoint with this content and architecture (of ``user`` if given)."""
    query = select(Checkpoint).where(
        Checkpoint.sha256 == sha256,
        Checkpoint.config_key == checkpoint_config_key(arch, arch_config),
    )
    if user is not None:
        query = query.where(Checkpoint.user_id == user.id)
    for row in session.scalars(query.order_by(Checkpoint.created_at)):
        if row.arch == arch and _same_config(row.arch_config, arch_config):
            return row
    return None


def _insert_or_get(session: Session, row: Any, find: Callable[[], Any]) -> Any:
    """Insert ``row`` in a savepoint; if a unique constraint says an equal row exists (another
    request stored the same upload meanwhile), answer that row instead.

    The constraint decides, not a check before the insert: of concurrent identical inserts one
    wins and the others wait for it, fail, and read its row. The caller's other pending changes
    are kept (only the savepoint is rolled back).
    """
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing
    return row


def create_checkpoint(
    session: Session,
    *,
    user: User,
    name: str,
    sha256: str,
    size: int,
    info: dict[str, Any],
    arch: str | None,
    arch_config: dict[str, Any] | None,
) -> Checkpoint:
    """Store a checkpoint row; when the user already has this content and architecture (an
    identical upload stored concurrently), that row is answered instead."""
    row = Checkpoint(
        user_id=user.id,
        name=name,
        sha256=sha256,
        size=size,
        format=str(info.get("format", "unknown")),
        num_params=int(info.get("num_params", 0)),
        arch=arch,
        arch_config=arch_config,
        config_key=checkpoint_config_key(arch, arch_config),
        info=info,
    )
    return _insert_or_get(
        session,
        row,
        lambda: find_checkpoint(
            session, sha256=sha256, arch=arch, arch_config=arch_config, user=user
        ),
    )


#: Ids are 32 hex characters (:func:`backend.models.new_id`); the id columns are ``String(32)``.
MAX_ID_LENGTH = 32


def plausible_id(row_id: Any) -> bool:
    """Whether ``row_id`` could name a row at all: a string of at most 32 characters without NUL.

    Anything else is answered "not found" without a query: PostgreSQL refuses NUL characters in
    text parameters and a non-string against a ``varchar`` column (both were 500s).
    """
    return isinstance(row_id, str) and 0 < len(row_id) <= MAX_ID_LENGTH and "\x00" not in row_id


def _owned(session: Session, model: Any, row_id: str, user: User, what: str) -> Any:
    """The row of ``model`` with this id if ``user`` owns it; 404 otherwise (another user's
    ids look exactly like unknown ones, and so do ids that cannot exist)."""
    if not plausible_id(row_id):
        shown = str(row_id)
        raise NotFound(what, shown if len(shown) <= 64 else shown[:64] + "…")
    row = session.get(model, row_id)
    if row is None or row.user_id != user.id:
        raise NotFound(what, row_id)
    return row


def _page(
    session: Session,
    model: Any,
    conditions: list[Any],
    order: tuple[Any, ...],
    offset: int,
    limit: int,
    load: tuple[Any, ...] = (),
) -> tuple[list[Any], int]:
    """One page of the rows matching ``conditions`` in ``order``, and the total count;
    ``load`` are loader options (relationships the caller will read, fetched in bulk)."""
    count = session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    rows = session.scalars(
        select(model).where(*conditions).order_by(*order).offset(offset).limit(limit).options(*load)
    )
    return list(rows), int(count)


def get_checkpoint(session: Session, *, checkpoint_id: str, user: User) -> Checkpoint:
    return _owned(session, Checkpoint, checkpoint_id, user, "checkpoint")


def list_checkpoints(
    session: Session, *, user: User, offset: int = 0, limit: int = 50
) -> tuple[list[Checkpoint], int]:
    order = (Checkpoint.created_at.desc(), Checkpoint.id)
    return _page(session, Checkpoint, [Checkpoint.user_id == user.id], order, offset, limit)


def find_dataset(session: Session, *, sha256: str, user: User | None = None) -> DatasetFile | None:
    query = select(DatasetFile).where(DatasetFile.sha256 == sha256)
    if user is not None:
        query = query.where(DatasetFile.user_id == user.id)
    return session.scalars(query.order_by(DatasetFile.created_at)).first()


def create_dataset(
    session: Session,
    *,
    user: User,
    name: str,
    sha256: str,
    size: int,
    fmt: str,
    info: dict[str, Any],
) -> DatasetFile:
    """Store a dataset row; when the user already has this content, that row is answered."""
    row = DatasetFile(
        user_id=user.id,
        name=name,
        sha256=sha256,
        size=size,
        format=fmt,
        n_train=int(info.get("n_train", 0)),
        n_test=int(info.get("n_test", 0)),
        num_classes=int(info.get("num_classes", 0)),
        info=info,
    )
    return _insert_or_get(session, row, lambda: find_dataset(session, sha256=sha256, user=user))


def get_dataset(session: Session, *, dataset_id: str, user: User) -> DatasetFile:
    return _owned(session, DatasetFile, dataset_id, user, "dataset")


def list_datasets(session: Session, *, user: User) -> list[DatasetFile]:
    return list(
        session.scalars(
            select(DatasetFile)
            .where(DatasetFile.user_id == user.id)
            .order_by(DatasetFile.created_at.desc())
        )
    )


# --- runs --------------------------------------------------------------------------------------


def create_run(
    session: Session,
    *,
    user: User,
    checkpoint: Checkpoint,
    dataset: str,
    dataset_row: DatasetFile | None,
    measures: list[str],
    params: dict[str, dict[str, Any]],
    options: dict[str, Any],
    queue: str,
) -> Run:
    """A new run in the initial status, ``queued`` (the caller commits, then enqueues)."""
    run = Run(
        user_id=user.id,
        checkpoint_id=checkpoint.id,
        dataset=dataset,
        dataset_id=dataset_row.id if dataset_row else None,
        measures=measures,
        params=params,
        options=options,
        queue=queue,
        status=run_state.INITIAL,
        progress=0.0,
        message="queued",
    )
    session.add(run)
    session.flush()
    return run


def mark_enqueued(session: Session, *, run_id: str, when: datetime | None = None) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(enqueued_at=when or utcnow()))


def get_run(session: Session, *, run_id: str, user: User) -> Run:
    return _owned(session, Run, run_id, user, "run")


#: What :func:`run_public` reads of a run's relationships, loaded with the runs in two queries
#: instead of two per run.
RUN_LOADS = (joinedload(Run.checkpoint), selectinload(Run.results))


def list_runs(
    session: Session,
    *,
    user: User,
    offset: int = 0,
    limit: int = 50,
    status: str | None = None,
) -> tuple[list[Run], int]:
    """The user's runs, newest first."""
    conditions = [Run.user_id == user.id]
    if status:
        conditions.append(Run.status == status)
    order = (Run.created_at.desc(), Run.id.desc())
    return _page(session, Run, conditions, order, offset, limit, RUN_LOADS)


def run_report(*, run: Run, blobs: BlobStore) -> dict[str, Any] | None:
    """The full report of a succeeded run (header + every measure's stored details).

    The measures' details are shared with other requests (:meth:`BlobStore.get_json_shared`):
    read them, don't change them.
    """
    if run.status != run_state.SUCCEEDED or run.report_head is None:
        return None
    report = dict(run.report_head)
    report["measures"] = {
        row.measure_id: blobs.get_json_shared(row.blob_sha256) for row in run.results
    }
    return report


def run_public(*, run: Run, blobs: BlobStore, with_report: bool = True) -> dict[str, Any]:
    """A run as the API answers it (``RunPublic``)."""
    error = None
    if run.status == run_state.FAILED:
        error = {
            "code": run.error_code or "failed",
            "message": run.error_message or "",
            "detail": None,
        }
    return {
        "id": run.id,
        "status": run.status,
        "progress": run.progress,
        "message": run.message,
        "error": error,
        "checkpoint_id": run.checkpoint_id,
        "checkpoint_name": run.checkpoint.name if run.checkpoint else None,
        "dataset": run.dataset,
        "measures": list(run.measures or []),
        "params": dict(run.params or {}),
        "options": dict(run.options or {}),
        "queue": run.queue,
        "attempts": run.attempts,
        "worker_id": run.worker_id,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "results": [
            {
                "measure_id": r.measure_id,
                "value": r.value,
                "status": r.status,
                "error_code": r.error_code,
                "seconds": r.seconds,
                "cached": r.cached_from is not None,
            }
            for r in run.results
        ],
        "report": run_report(run=run, blobs=blobs) if with_report else None,
    }


def measure_values(session: Session, *, run_ids: list[str]) -> dict[str, dict[str, float | None]]:
    """``{run_id: {measure_id: value}}`` from the queryable scalar table."""
    out: dict[str, dict[str, float | None]] = {rid: {} for rid in run_ids}
    rows = session.execute(
        select(MeasureResultRow.run_id, MeasureResultRow.measure_id, MeasureResultRow.value).where(
            MeasureResultRow.run_id.in_(run_ids)
        )
    )
    for run_id, measure_id, value in rows:
        out[run_id][measure_id] = value
    return out


# --- comparisons and share links ---------------------------------------------------------------


def create_comparison(
    session: Session, *, user: User, run_ids: list[str], title: str | None, max_runs: int
) -> Comparison:
    """A comparison of the user's runs (an unknown or foreign run id is 404)."""
    unique = list(dict.fromkeys(run_ids))
    if not unique:
        raise ServiceError("validation_error", "run_ids must name at least one run")
    if len(unique) > max_runs:
        raise ServiceError(
            "too_many_runs", f"a comparison holds at most {max_runs} runs, got {len(unique)}"
        )
    for run_id in unique:
        get_run(session, run_id=run_id, user=user)
    comparison = Comparison(user_id=user.id, title=title or "", run_ids=unique)
    session.add(comparison)
    session.flush()
    return comparison


def get_comparison(session: Session, *, comparison_id: str, user: User) -> Comparison:
    return _owned(session, Comparison, comparison_id, user, "comparison")


def list_comparisons(
    session: Session, *, user: User, offset: int = 0, limit: int = 50
) -> tuple[list[Comparison], int]:
    order = (Comparison.created_at.desc(), Comparison.id)
    return _page(session, Comparison, [Comparison.user_id == user.id], order, offset, limit)


def comparison_runs(session: Session, *, comparison: Comparison) -> list[Run]:
    """The comparison's runs in its order (runs deleted since are skipped)."""
    ids = list(comparison.run_ids or [])
    rows = {
        r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)).options(*RUN_LOADS))
    }
    return [rows[i] for i in ids if i in rows]


def create_share_link(
    session: Session, *, comparison: Comparison, expires_at: datetime | None = None
) -> str:
    """A new read-only link token (256 random bits); only its sha256 is stored. The link stops
    working at ``expires_at`` (naive UTC) when given, or when revoked."""
    token = new_token()
    session.add(
        ShareLink(comparison_id=comparison.id, token_hash=hash_token(token), expires_at=expires_at)
    )
    session.flush()
    return token


def _share_link_active() -> Any:
    """Neither revoked nor expired, now."""
    return and_(
        ShareLink.revoked_at.is_(None),
        or_(ShareLink.expires_at.is_(None), ShareLink.expires_at > utcnow()),
    )


def revoke_share_links(session: Session, *, comparison: Comparison) -> int:
    """Revoke every active link of the comparison; returns how many were active."""
    result = session.execute(
        update(ShareLink)
        .where(ShareLink.comparison_id == comparison.id, ShareLink.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return _rowcount(result)


def active_share_count(session: Session, *, comparison: Comparison) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ShareLink)
            .where(ShareLink.comparison_id == comparison.id, _share_link_active())
        )
        or 0
    )


def get_comparison_by_share_token(session: Session, *, token: str) -> Comparison | None:
    """The comparison an active share token opens; None when unknown, revoked or expired, and
    when its owner has lost access (removed, inactive, or every token revoked:
    :func:`has_access`)."""
    if not token or len(token) > 200:
        return None
    link = session.scalar(
        select(ShareLink).where(ShareLink.token_hash == hash_token(token), _share_link_active())
    )
    if link is None:
        return None
    comparison = session.get(Comparison, link.comparison_id)
    if comparison is None:
        return None
    owner = session.get(User, comparison.user_id)
    if owner is None or not has_access(session, user=owner):
        return None
    return comparison


# --- recovery and workers ----------------------------------------------------------------------


def expired_running_runs(session: Session, *, now: datetime) -> list[Run]:
    """Runs left ``running`` by a worker whose lease has expired."""
    return list(
        session.scalars(
            select(Run)
            .where(Run.status == run_state.RUNNING, Run.lease_expires_at < now)
            .with_for_update()
        )
    )


def stale_queued_runs(session: Session, *, older_than: datetime) -> list[Run]:
    """Runs ``queued`` whose last send is older than ``older_than`` (or never sent)."""
    return list(
        session.scalars(
            select(Run).where(
                Run.status == run_state.QUEUED,
                (Run.enqueued_at.is_(None) & (Run.created_at < older_than))
                | (Run.enqueued_at < older_than),
            )
        )
    )


def live_workers(session: Session, *, within: timedelta) -> list[WorkerBeat]:
    return list(
        session.scalars(
            select(WorkerBeat)
            .where(WorkerBeat.last_seen >= utcnow() - within)
            .order_by(WorkerBeat.worker_id)
        )
    )
