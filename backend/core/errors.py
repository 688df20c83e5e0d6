"""Errors of the service and their HTTP answers: one table, one handler, one format.

Every error answers ``{"code", "message", "detail"}``. The engine's error codes
(``genscope.errors``) come back from the inspection subprocess and the worker as plain codes;
:data:`ERROR_CODE_TO_HTTP_STATUS` maps them (and the service's own codes) to HTTP statuses. An
unexpected exception is logged with its stack and answered 500 without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.core.security import redact_path

log = logging.getLogger("genscope.api")

ERROR_CODE_TO_HTTP_STATUS: dict[str, int] = {
    # the engine's codes (genscope.errors): the input cannot be used as it is
    "bad_checkpoint": 422,
    "unsafe_checkpoint": 422,
    "weight_mismatch": 422,
    "non_finite_weights": 422,
    "bad_architecture": 422,
    "bad_dataset": 422,
    "shape_mismatch": 422,
    "unknown_measure": 422,
    "bad_parameter": 422,
    "unsupported_model": 422,
    "measure_failed": 500,
    # the service's codes
    "validation_error": 422,
    "bad_request": 400,
    "bad_host": 400,
    "cross_origin": 403,
    "csrf_failed": 403,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "insufficient_storage": 507,
    "unsupported_media_type": 415,
    "too_many_runs": 422,
    "inspect_failed": 502,
    "sandbox_limit": 422,
    "server_busy": 503,
    "broker_unavailable": 503,
    "database_unavailable": 503,
    "inspect_timeout": 504,
    "internal_error": 500,
}

_STATUS_TO_CODE = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


class ErrorBody(BaseModel):
    """The one error format of the API."""

    code: str
    message: str
    detail: Any = None


class ServiceError(Exception):
    """An error with a stable code; its HTTP status comes from the table."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def status_code(self) -> int:
        return ERROR_CODE_TO_HTTP_STATUS.get(self.code, 400)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class NotFound(ServiceError):
    def __init__(self, what: str, ident: Any) -> None:
        super().__init__("not_found", f"{what} {ident} not found", {"id": str(ident)})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route may answer."""
    described = {
        400: "Bad request",
        401: "Missing or invalid bearer token (auth on)",
        404: "Not found (or owned by another user)",
        413: "Upload larger than GENSCOPE_MAX_UPLOAD_MB",
        507: "The server has no room left to store the upload",
        422: "Invalid input (validation or an engine error code)",
        502: "The inspection subprocess failed unexpectedly",
        503: "Broker or database unavailable",
        504: "Inspection timed out",
    }
    return {
        s: {"model": ErrorBody, "description": described.get(s, "Error")} for s in (*statuses, 500)
    }


def _render(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else None
    if getattr(exc, "retry_after", None) is not None:
        headers = {"Retry-After": str(exc.retry_after)}
    return _render(exc.status_code, exc.body(), headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_TO_CODE.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return _render(exc.status_code, {"code": code, "message": message, "detail": None})


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return _render(422, {"code": "validation_error", "message": message, "detail": errors})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    path = redact_path(request.url.path)  # a share token in the path is a credential
    log.error("unexpected error on %s %s", request.method, path, exc_info=exc)
    return _render(
        500, {"code": "internal_error", "message": "internal server error", "detail": None}
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the one error format on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
