"""The FastAPI application: ``create_app()``.

Start-up (lifespan): validate the settings, create the data directories, apply the migrations,
recover lost runs, warm the measure catalogue in the background. The dashboard's HTML routes
(``frontend.pages.router``) and static files are included when that package is present.

This module never imports torch (a test checks it): the engine runs in subprocesses and workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from backend.api.docs import router as docs_router
from backend.api.routes import api_router
from backend.core.config import Settings, get_settings
from backend.core.db import install_database_error_handlers, migrate, session_scope
from backend.core.errors import install_error_handlers
from backend.core.security import install_security

log = logging.getLogger("genscope.api")


def _resolve(app: FastAPI, dependency: Callable[[], Any]) -> Any:
    """A zero-argument dependency, honouring ``app.dependency_overrides`` (used at start-up)."""
    return app.dependency_overrides.get(dependency, dependency)()


def start_up(settings: Settings, *, recover_runs: bool = True) -> None:
    """Directories, the sandbox check, migrations, the local user (auth off) and recovery of
    lost runs."""
    from backend import crud
    from backend.catalogue import measure_catalogue

    settings.ensure_dirs()
    from backend.sandbox import ensure_available

    ensure_available(settings)  # refuse to serve uploads without the sandbox (GENSCOPE_SANDBOX)
    if settings.auth == "off" and settings.insecure_allow_remote_without_auth:
        log.warning(
            "GENSCOPE_INSECURE_ALLOW_REMOTE_WITHOUT_AUTH=1 with GENSCOPE_AUTH=off: anyone who can "
            "reach this service can use it without a token"
        )
    migrate(settings.sqlalchemy_url)
    from backend.recovery import remove_partial_uploads

    remove_partial_uploads(settings)
    if settings.auth == "off":
        with session_scope(settings.sqlalchemy_url) as session:
            crud.get_or_create_local_user(session)
    if recover_runs:
        from backend.queue import get_run_queue
        from backend.recovery import recover

        try:
            recover(settings, get_run_queue(settings))
        except Exception:
            log.exception("recovery at start-up failed; runs will be recovered by a worker")

    def warm() -> None:
        try:
            measure_catalogue()  # reads the declarations once, off the first request
        except Exception:
            log.exception("could not build the measure catalogue")

    threading.Thread(target=warm, name="genscope-catalogue", daemon=True).start()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = _resolve(app, get_settings)
    start_up(settings)
    yield


def _include_dashboard(app: FastAPI) -> None:
    if importlib.util.find_spec("frontend") is None:
        return
    if importlib.util.find_spec("frontend.pages") is not None:
        try:
            pages = importlib.import_module("frontend.pages")
        except Exception:
            log.exception("the dashboard (frontend.pages) failed to import; serving the API only")
        else:
            router = getattr(pages, "router", None)
            if router is not None:
                app.include_router(router)
    spec = importlib.util.find_spec("frontend")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        if static.is_dir():
            app.mount("/static", StaticFiles(directory=static), name="static")
            break


def create_app() -> FastAPI:
    """The GenScope service: the JSON API under ``/api`` and, when present, the dashboard."""
    import genscope

    app = FastAPI(
        title="GenScope",
        version=genscope.__version__,
        description="Generalization diagnostics for deep networks: upload checkpoints, run "
        "analyses on workers, compare and share the results.",
        lifespan=lifespan,
        docs_url=None,  # served by backend.api.docs from the installed bundle, not a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    install_security(app)
    install_database_error_handlers(app)
    app.include_router(api_router)
    app.include_router(docs_router)
    _include_dashboard(app)
    return app
