"""Who can reach the service: a default that no other web page can drive.

With ``GENSCOPE_AUTH=off`` the service has no credential to check, so three things keep other
sites and other machines out (docs/security.md):

1. **Loopback only** (:func:`check_exposure`): ``genscope serve`` refuses a non-loopback
   ``--host`` unless tokens are on, or ``GENSCOPE_INSECURE_ALLOW_REMOTE_WITHOUT_AUTH=1`` says
   that anyone who can reach the port may use the service.
2. **A Host allow-list** (:class:`ExposureMiddleware`): a request whose ``Host`` is not in
   ``GENSCOPE_ALLOWED_HOSTS`` (default: ``localhost``, ``127.0.0.1``, ``::1`` and the host of
   ``GENSCOPE_PUBLIC_URL``) answers 400 ``bad_host``. A DNS-rebinding page reaches the service
   under its own host name, so it is refused.
3. **Same-origin state changes**: a ``POST``/``PUT``/``PATCH``/``DELETE`` that a browser sends
   from another site answers 403 ``cross_origin``: ``Sec-Fetch-Site`` other than
   ``same-origin``/``none``, or an ``Origin`` (else ``Referer``) that is not the service's own
   origin. With auth off, a state change that a browser sends (one carrying any of those
   headers) must also carry the dashboard's CSRF token in ``X-CSRF-Token``
   (:func:`csrf_token`: a random secret kept in the data directory, written into every dashboard
   page); a page of another origin cannot read it. Clients that are not browsers (the CLI,
   ``curl``, scripts) send none of those headers and need no token. With tokens on, the bearer
   token (kept by the dashboard in the origin's storage, never in a cookie) is the credential.

(OWASP Cross-Site Request Forgery Prevention Cheat Sheet: "Verifying Origin With Standard
Headers", "Fetch Metadata headers", "Synchronizer Token Pattern".)
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"
_BROWSER_HEADERS = (b"origin", b"referer", b"sec-fetch-site", b"sec-fetch-mode")


class UnsafeExposure(ValueError):
    """The service would listen beyond loopback with nobody's identity checked."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) is this machine's loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Any) -> None:
    """Refuse to listen on ``host`` beyond loopback with auth off (``genscope serve``).

    Raises:
        UnsafeExposure: naming the settings that would allow it.
    """
    if is_loopback(host) or settings.auth == "tokens":
        return
    if settings.insecure_allow_remote_without_auth:
        return
    raise UnsafeExposure(
        f"refusing to listen on {host} with GENSCOPE_AUTH=off: anyone who can reach the port "
        "could upload and analyse files as you. Turn tokens on (GENSCOPE_AUTH=tokens, then "
        "'genscope users create NAME'), listen on 127.0.0.1, or, on a network you trust "
        "entirely, set GENSCOPE_INSECURE_ALLOW_REMOTE_WITHOUT_AUTH=1"
    )


def allowed_hosts(settings: Any) -> set[str]:
    """The host names (no port) requests may be addressed to; ``*`` admits any."""
    hosts = {h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()}
    if not hosts:
        hosts = set(LOOPBACK_NAMES) | {"[::1]"}
    if settings.public_url:
        name = urlsplit(settings.public_url).hostname
        if name:
            hosts.add(name.lower())
    return hosts


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` → ``[::1]``, ``a:80`` → ``a``)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host_header: str, hosts: set[str]) -> bool:
    if "*" in hosts:
        return True
    name = _host_name(host_header)
    return name in hosts or name.strip("[]") in hosts


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origins(scope: Scope, host_header: str, settings: Any) -> set[str]:
    """The service's own origins: the request's scheme and Host, and ``GENSCOPE_PUBLIC_URL``."""
    scheme = str(scope.get("scheme", "http"))
    out = {f"{scheme}://{host_header}".lower()}
    if settings.public_url:
        public = _origin(settings.public_url)
        if public:
            out.add(public)
    return out


_csrf_lock = threading.Lock()
_csrf_cache: dict[Path, str] = {}


MIN_TOKEN_CHARS = 32


def _read_token(path: Path) -> str | None:
    """The stored token, or None when the file is missing, empty or cut short."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return token if len(token) >= MIN_TOKEN_CHARS else None


def csrf_token(settings: Any) -> str:
    """The dashboard's CSRF token: 256 random bits in ``<data dir>/csrf-secret`` (mode 0600),
    created on first use and shared by every API process on the data directory.

    The file is written whole under a temporary name and linked into place (``os.link`` fails
    when another process got there first, whose token is then used), so no process ever reads
    a half-written token; a file left empty or short is replaced, never trusted.
    """
    path = Path(settings.data_dir) / "csrf-secret"
    with _csrf_lock:
        cached = _csrf_cache.get(path)
        if cached is not None:
            return cached
        token = _read_token(path)
        if token is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = secrets.token_urlsafe(32)
            tmp = path.with_name(f".csrf-secret.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(fresh)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)
                    token = fresh
                except FileExistsError:
                    token = _read_token(path)
                    if token is None:  # a broken file: replace it
                        os.replace(tmp, path)
                        token = fresh
            finally:
                tmp.unlink(missing_ok=True)
        _csrf_cache[path] = token
        return token


def _headers(scope: Scope) -> dict[bytes, str]:
    return {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def refusal(scope: Scope, settings: Any) -> tuple[int, str, str] | None:
    """``(status, code, message)`` when the request must be refused, else None."""
    headers = _headers(scope)
    host = headers.get(b"host", "")
    if not host_allowed(host, allowed_hosts(settings)):
        return (
            400,
            "bad_host",
            f"requests to host {_host_name(host)!r} are not served here (GENSCOPE_ALLOWED_HOSTS)",
        )
    if str(scope.get("method", "GET")).upper() not in STATE_CHANGING:
        return None
    site = headers.get(b"sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return 403, "cross_origin", f"a {site} request cannot change anything here"
    sender = headers.get(b"origin") or headers.get(b"referer")
    if sender is not None:
        origin = _origin(sender) if sender != "null" else None
        if origin is None or origin not in own_origins(scope, host, settings):
            return 403, "cross_origin", "a request from another origin cannot change anything here"
    browser = any(name in headers for name in _BROWSER_HEADERS)
    if settings.auth == "off" and browser:
        given = headers.get(CSRF_HEADER.encode(), "")
        if not hmac.compare_digest(given.encode(), csrf_token(settings).encode()):
            return (
                403,
                "csrf_failed",
                "this change must come from a GenScope page (its X-CSRF-Token is missing or "
                "wrong); reload the page",
            )
    return None


def app_settings(app: Any) -> Any:
    """The settings an app serves with (its ``dependency_overrides`` honoured)."""
    from backend.core.config import get_settings

    overrides = getattr(app, "dependency_overrides", {}) if app is not None else {}
    return overrides.get(get_settings, get_settings)()


class ExposureMiddleware:
    """Host allow-list, same-origin and CSRF checks (module docstring) before any route runs;
    the settings are the app's own (``dependency_overrides`` included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = refusal(scope, app_settings(scope.get("app")))
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refused
        body = json.dumps({"code": code, "message": message, "detail": None}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
