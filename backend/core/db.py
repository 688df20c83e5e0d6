"""Database engines, sessions and migrations (SQLAlchemy 2 + Alembic).

One engine per database URL per process. SQLite gets WAL, a busy timeout and foreign keys so that
the API and the worker process can share the file. PostgreSQL connections are pinged before use
(``pool_pre_ping``: connections left stale by a server restart are replaced, not handed out) and
time out after :data:`CONNECT_TIMEOUT_SECONDS` when the server does not answer; the API turns an
unreachable database into 503 ``database_unavailable`` (``backend.core.dbfaults``).
Migrations are applied with :func:`migrate` on start-up of ``genscope serve`` and the API.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
CONNECT_TIMEOUT_SECONDS = 5


def utcnow() -> datetime:
    """Naive UTC now: every timestamp in the database is naive UTC (SQLite keeps no zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: Connections per process: as many as the API's thread pool has threads (40, anyio's default)
#: plus some, so that a request thread never waits for a connection that only a request waiting
#: for a thread could give back (that wait would stall the API until the pool timeout).
POOL_SIZE = 10
POOL_OVERFLOW = 40


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite: WAL, busy timeout, foreign keys)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        connect_args=connect_args,
    )


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (created on first use)."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Forget every engine (after a fork, or at the end of tests)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose(close=False)
        _ENGINES.clear()


def install_database_error_handlers(app: Any) -> None:
    """Answer database outages on the FastAPI ``app`` with 503 ``database_unavailable``."""
    from backend.core.dbfaults import install_database_error_handlers as install

    install(app)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    """An Alembic config for ``url`` that uses ``backend/alembic``."""
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_DIR.parent / "alembic.ini"))
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str) -> None:
    """Apply every migration to the database at ``url`` (idempotent)."""
    from alembic import command

    engine = get_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes may start at once (API replicas, workers): one migrates at a time.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7041968)")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
