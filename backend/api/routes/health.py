"""``/api/health``: database, broker and worker state (no authentication)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from backend import crud
from backend.api.deps import QueueDep, SessionDep, SettingsDep
from backend.core.config import redact_url
from backend.schemas import HealthPublic

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=HealthPublic)
async def health(session: SessionDep, settings: SettingsDep, queue: QueueDep) -> Any:
    """``ok`` when the database and broker answer; workers seen in the last minute are listed."""
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
    broker = await run_in_threadpool(queue.ping)
    healthy = database["ok"] and broker["ok"]
    return {
        "status": "ok" if healthy else "degraded",
        "version": genscope.__version__,
        "database": database,
        "broker": broker,
        "workers": workers,
        "auth": settings.auth,
    }
