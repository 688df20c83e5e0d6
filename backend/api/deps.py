"""Dependencies of the API as named ``Annotated`` aliases.

Tests (and the dashboard) swap any of them with ``app.dependency_overrides``: overriding
:func:`backend.core.config.get_settings` changes the database, blob store, broker and auth mode
of everything below it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend import crud
from backend.blobs import BlobStore
from backend.catalogue import measure_catalogue
from backend.core.config import Settings, get_settings
from backend.core.db import get_engine
from backend.core.errors import ServiceError
from backend.models import User
from backend.queue import RunQueue, get_run_queue

SettingsDep = Annotated[Settings, Depends(get_settings)]

bearer = HTTPBearer(auto_error=False, description="an API token (`genscope users create NAME`)")


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A session per request; handlers commit what they change."""
    with Session(get_engine(settings.sqlalchemy_url), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@lru_cache(maxsize=8)
def _blob_store(root: str) -> BlobStore:
    return BlobStore(root)


def get_blobs(settings: SettingsDep) -> BlobStore:
    return _blob_store(str(settings.blob_dir))


BlobsDep = Annotated[BlobStore, Depends(get_blobs)]


def get_queue(settings: SettingsDep) -> RunQueue:
    return get_run_queue(settings)


QueueDep = Annotated[RunQueue, Depends(get_queue)]


def get_catalogue() -> list[dict[str, Any]]:
    """The measure catalogue, from the measures' declarations (no torch, no subprocess)."""
    return measure_catalogue()


CatalogueDep = Annotated[list[dict[str, Any]], Depends(get_catalogue)]


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The caller: the local user with auth off; the bearer token's owner with auth on."""
    if settings.auth == "off":
        local = crud.get_or_create_local_user(session)
        session.commit()
        return local
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ServiceError("unauthorized", "this server needs an API token: Authorization: Bearer")
    user = crud.get_user_by_token(session, token=credentials.credentials)
    session.commit()  # end the lookup's transaction: the connection goes back to the pool
    if user is None:
        raise ServiceError("unauthorized", "unknown or revoked API token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def base_url(request: Request, settings: Settings) -> str:
    """Where links should point: ``GENSCOPE_PUBLIC_URL`` or the request's own base URL."""
    return settings.public_url or str(request.base_url).rstrip("/")


#: The largest ``offset`` a list route accepts. SQL ``OFFSET`` is a signed 64-bit integer on
#: SQLite and PostgreSQL: a larger Python int overflowed the driver and answered 500. The bound is
#: declared in the OpenAPI schema, so clients (and the fuzz tests) see it.
MAX_OFFSET = 2**31 - 1


class Page:
    """``offset``/``limit`` query parameters of list routes, bounded (422 outside the bounds)."""

    def __init__(
        self,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> None:
        self.offset = offset
        self.limit = limit


PageDep = Annotated[Page, Depends(Page)]
