"""One router module per resource; :data:`api_router` lists them.

Every route of :data:`api_router` refuses path and query parameters that are not valid Unicode
text (a lone UTF-16 surrogate) with 422 before its handler runs: such a string cannot be sent to
PostgreSQL or written into an answer. JSON bodies are checked by their schemas
(:class:`backend.schemas.RequestBody`) and form fields where they are read.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from backend.api.routes import checkpoints, comparisons, datasets, health, measures, runs, share
from backend.schemas import utf8_text


def utf8_parameters(request: Request) -> None:
    """422 ``validation_error`` when a path or query parameter holds a lone surrogate."""
    for name, value in request.path_params.items():
        utf8_text(value, field=name)
    for name, value in request.query_params.multi_items():
        utf8_text(name, field="query parameter name")
        utf8_text(value, field=name)


api_router = APIRouter(prefix="/api", dependencies=[Depends(utf8_parameters)])
for module in (checkpoints, datasets, runs, comparisons, share, measures, health):
    api_router.include_router(module.router)
