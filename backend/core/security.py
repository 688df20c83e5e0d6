"""Tokens, response headers and log redaction.

* API bearer tokens and share-link tokens: 256 random bits (``secrets``), stored only as sha256
  hashes. A token is checked by looking its hash up in a unique index: the comparison happens
  on the hash, so its timing says nothing about the token (no byte-by-byte compare of secrets).
* :class:`SecurityHeadersMiddleware`: nosniff, no framing, a referrer policy and a CSP on every
  answer that does not set its own; CORS stays off.
* :class:`RedactShareTokens`: share tokens are cut out of access-log lines.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_BYTES = 32  # 256 bits of randomness


def new_token() -> str:
    """A fresh URL-safe token with 256 random bits."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The sha256 hex digest stored in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time equality of two hashes or tokens (``hmac.compare_digest``)."""
    return hmac.compare_digest(a, b)


# --- response headers ---------------------------------------------------------------------------

#: Sent with every answer that does not set its own (the dashboard's HTML pages set a stricter
#: set in ``frontend.pages``): no MIME sniffing, no framing (clickjacking), no full URLs in the
#: Referer header of links followed from the app.
DEFAULT_SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
#: JSON answers load nothing and are never framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: The interactive docs (Swagger UI, served from the installed bundle by ``backend.api.docs``):
#: scripts and styles from this origin only, no inline script; Swagger UI sets inline styles and
#: draws its icons from ``data:`` URLs.
DOCS_PATHS = ("/docs",)
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SecurityHeadersMiddleware:
    """A pure ASGI middleware adding :data:`DEFAULT_SECURITY_HEADERS` and a Content-Security-
    Policy to every HTTP answer that does not set them itself (streaming bodies untouched).

    CORS stays off: no ``Access-Control-Allow-*`` header is ever added, so browsers refuse
    cross-origin reads, and a preflight ``OPTIONS`` answers 405.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULT_SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- secrets in logs ----------------------------------------------------------------------------

#: Paths whose last segment is a share token (``/share/T``, ``/api/share/T``, ``/ui/share/T``).
_SHARE_PATH = re.compile(r"(/share/)[^/?#\s]+")
REDACTED = "[redacted]"


def redact_path(path: str) -> str:
    """``path`` with any share token replaced by ``[redacted]`` (for logs).

    >>> redact_path("/api/share/abc?x=1")
    '/api/share/[redacted]?x=1'
    """
    return _SHARE_PATH.sub(rf"\1{REDACTED}", path)


class RedactShareTokens(logging.Filter):
    """Rewrites the request line of access-log records so share tokens never reach the logs.

    A share token is a bearer credential that travels in the URL path, so uvicorn's access log
    (``"%s - \\"%s %s HTTP/%s\\" %d"``, the path third) would otherwise write it out in full.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_path(a) if isinstance(a, str) and "/share/" in a else a for a in record.args
            )
        if isinstance(record.msg, str) and "/share/" in record.msg:
            record.msg = redact_path(record.msg)
        return True


_ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")


def install_security(app: Any) -> None:
    """Register the response headers on ``app`` and the share-token redaction on the access
    loggers (idempotent)."""
    from backend.core.exposure import ExposureMiddleware

    app.add_middleware(ExposureMiddleware)  # inside: its refusals get the headers too
    app.add_middleware(SecurityHeadersMiddleware)
    for name in _ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactShareTokens) for f in logger.filters):
            logger.addFilter(RedactShareTokens())
