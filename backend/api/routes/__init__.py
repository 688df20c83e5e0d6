"""One router module per resource; :data:`api_router` lists them."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.routes import checkpoints, comparisons, datasets, health, measures, runs, share

api_router = APIRouter(prefix="/api")
for module in (checkpoints, datasets, runs, comparisons, share, measures, health):
    api_router.include_router(module.router)
