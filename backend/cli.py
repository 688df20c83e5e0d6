"""The service's commands, added to ``genscope`` through the ``genscope.commands`` entry points
(``pyproject.toml``): ``genscope serve`` and ``genscope users ...``.

This module imports only typer and the engine's console helpers, so that ``genscope`` can list
these commands without the service's packages; each command imports what it needs when it runs.
Errors print one line, ``error [code]: message``, and exit with status 2 (interfaces.md §2).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from genscope.console import err_console, fail, out_console


def service_settings() -> Any:
    """The validated ``GENSCOPE_*`` settings, or one line per problem and exit status 2."""
    from backend.core.config import get_settings

    try:
        return get_settings()
    except Exception as exc:  # pydantic's validation error: one readable line per problem
        fail("bad_settings", f"invalid GENSCOPE_* settings: {exc}", 2)


def require_sandbox(settings: Any) -> None:
    """Stop with ``sandbox_unavailable`` when the sandbox the settings ask for cannot run."""
    from backend.sandbox import SandboxUnavailable, ensure_available

    try:
        ensure_available(settings)
    except SandboxUnavailable as exc:
        fail("sandbox_unavailable", str(exc), 2)


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="start a worker child process")
    ] = True,
) -> None:
    """Start the API and dashboard with one worker child (embedded defaults: SQLite, no Redis)."""
    import signal
    import subprocess

    import uvicorn

    from backend.core.db import migrate

    settings = service_settings()
    from backend.core.exposure import UnsafeExposure, check_exposure

    try:  # before anything else: no listening beyond loopback with nobody's identity checked
        check_exposure(host, settings)
    except UnsafeExposure as exc:
        fail("unsafe_exposure", str(exc), 2)
    if settings.insecure_allow_remote_without_auth and settings.auth == "off":
        err_console.print(
            "[bold red]WARNING[/]: GENSCOPE_INSECURE_ALLOW_REMOTE_WITHOUT_AUTH=1 - anyone who can "
            f"reach {host}:{port} can use this service without a token"
        )
    settings.ensure_dirs()
    require_sandbox(settings)
    migrate(settings.sqlalchemy_url)
    child = None
    if worker:
        from backend.recovery import die_with_parent

        child = subprocess.Popen(
            [sys.executable, "-m", "genscope.cli", "worker", "--queues", "gpu,cpu"],
            env=dict(os.environ),
            preexec_fn=die_with_parent(),  # a kill -9 of serve takes the worker with it
        )
    # uvicorn re-raises SIGTERM after its shutdown: turn it into SystemExit so that the worker
    # child is stopped below instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    out_console.print(f"GenScope is running at [bold]http://{shown}:{port}/[/] (Ctrl-C stops it)")
    try:
        uvicorn.run("backend.main:create_app", factory=True, host=host, port=port, log_level="info")
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


users_app = typer.Typer(help="Users and API tokens of the service (GENSCOPE_AUTH=tokens).")


@users_app.command("create")
def users_create(name: Annotated[str, typer.Argument(help="the new user's name")]) -> None:
    """Create a user and print its API token (shown this once; only its hash is stored)."""
    from backend import crud
    from backend.core.db import migrate, session_scope
    from backend.core.errors import ServiceError

    settings = service_settings()
    settings.ensure_dirs()
    migrate(settings.sqlalchemy_url)
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            _user, token = crud.create_user(session, name=name)
    except ServiceError as exc:
        fail(exc.code, exc.message, 2)
    print(token)


@users_app.command("token")
def users_token(name: Annotated[str, typer.Argument(help="an existing user")]) -> None:
    """Issue another API token for a user (printed once)."""
    from sqlalchemy import select

    from backend import crud
    from backend.core.db import migrate, session_scope
    from backend.models import User

    settings = service_settings()
    migrate(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            fail("not_found", f"no user {name!r}", 2)
        token = crud.create_token(session, user=user)
    print(token)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="an existing user")]) -> None:
    """Revoke every API token of a user."""
    from backend import crud
    from backend.core.db import migrate, session_scope
    from backend.core.errors import ServiceError

    settings = service_settings()
    migrate(settings.sqlalchemy_url)
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            count = crud.revoke_user_tokens(session, name=name)
    except ServiceError as exc:
        fail(exc.code, exc.message, 2)
    print(f"revoked {count} token(s) of {name}")


@users_app.command("list")
def users_list() -> None:
    """List the users."""
    from backend import crud
    from backend.core.db import migrate, session_scope

    settings = service_settings()
    migrate(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        for user in crud.list_users(session):
            print(f"{user.id}\t{user.name}\t{'active' if user.is_active else 'inactive'}")
