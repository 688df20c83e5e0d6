"""``/api/health``: database, broker and worker state (no authentication).

Health stays open so that load balancers and ``genscope demo`` can poll it, but with auth on a
caller without a valid token sees only whether each component answers: the database location
and the worker ids are for users of the server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import text

from backend import crud
from backend.api.deps import QueueDep, SessionDep, SettingsDep, bearer
from backend.core.config import redact_url
from backend.schemas import HealthPublic

router = APIRouter(prefix="/health", tags=["health"])


def _authenticated(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> bool:
    """Whether the caller may see the details: auth off, or a valid bearer token."""
    if settings.auth == "off":
        return True
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    try:
        return crud.get_user_by_token(session, token=credentials.credentials) is not None
    except Exception:  # the database is down: no details
        session.rollback()
        return False


@router.get("", response_model=HealthPublic)
def health(
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    detailed: Annotated[bool, Depends(_authenticated)],
) -> Any:
    """``ok`` when the database and broker answer; workers seen in the last minute are listed
    (to callers with a token when auth is on)."""
    import genscope

    database: dict[str, Any] = {"ok": True, "url": redact_url(settings.sqlalchemy_url)}
    workers: list[dict[str, Any]] = []
    try:
        session.execute(text("SELECT 1"))
        window = timedelta(seconds=max(60.0, 4 * settings.recovery_interval_seconds))
        workers = [
            {"id": w.worker_id, "queues": w.queues.split(","), "last_seen": w.last_seen}
            for w in crud.live_workers(session, within=window)
        ]
    except Exception as exc:  # report, don't raise: health must answer
        database = {"ok": False, "url": database["url"], "error": type(exc).__name__}
    broker = queue.ping()
    healthy = database["ok"] and broker["ok"]
    if not detailed:
        database = {"ok": database["ok"]}
        broker = {"ok": broker["ok"]}
        workers = []
    return {
        "status": "ok" if healthy else "degraded",
        "version": genscope.__version__,
        "database": database,
        "broker": broker,
        "workers": workers,
        "auth": settings.auth,
    }
