"""The database going away under the API: answer 503 ``database_unavailable``, keep serving.

SQLAlchemy raises :class:`~sqlalchemy.exc.OperationalError` when the server refuses or drops a
connection (PostgreSQL restarted, SQLite file locked for too long), :class:`~sqlalchemy.exc.
InterfaceError` when the driver's connection is closed under it, a
:class:`~sqlalchemy.exc.DBAPIError` with ``connection_invalidated`` when a pooled connection
turns out dead mid-statement, and :class:`~sqlalchemy.exc.TimeoutError` when the pool has no
connection to give. All of them answer 503 with the one error body; any other database error is
a bug and answers 500 like every unexpected exception. The engine (``backend.core.db``) pings
pooled PostgreSQL connections before use (``pool_pre_ping``), so once the server is back the
stale connections are replaced and requests succeed again without a restart.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from backend.core.errors import ERROR_CODE_TO_HTTP_STATUS
from backend.core.security import redact_path

log = logging.getLogger("genscope.api")

CODE = "database_unavailable"


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (rather than a bad statement)."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def database_unavailable_body(exc: BaseException) -> dict[str, object]:
    """The ``{code, message, detail}`` body of a 503 (no connection string, no traceback)."""
    kind = type(getattr(exc, "orig", None) or exc).__name__
    return {
        "code": CODE,
        "message": "the database is unavailable; try again in a moment",
        "detail": {"error": kind},
    }


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        log.error(
            "database error on %s %s", request.method, redact_path(request.url.path), exc_info=exc
        )
        return JSONResponse(
            status_code=500,
            content={"code": "internal_error", "message": "internal server error", "detail": None},
        )
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        redact_path(request.url.path),
        first[0] if first else type(exc).__name__,
    )
    return JSONResponse(
        status_code=ERROR_CODE_TO_HTTP_STATUS[CODE],
        content=database_unavailable_body(exc),
        headers={"Retry-After": "5"},
    )


def install_database_error_handlers(app: FastAPI) -> None:
    """Answer database outages on ``app`` with 503 ``database_unavailable``."""
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
