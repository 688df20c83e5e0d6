"""``/api/share/{token}``: a shared comparison, read-only, without authentication."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend import crud
from backend.api.deps import BlobsDep, SessionDep
from backend.core.errors import NotFound, error_responses
from backend.schemas import SharedComparison

router = APIRouter(prefix="/share", tags=["share"])


@router.get("/{token}", response_model=SharedComparison, responses=error_responses(404))
def read_shared(token: str, session: SessionDep, blobs: BlobsDep) -> Any:
    """The comparison this token opens, with every run's report; 404 when unknown or revoked."""
    comparison = crud.get_comparison_by_share_token(session, token=token)
    if comparison is None:
        raise NotFound("share link", "(token)")
    runs = crud.comparison_runs(session, comparison=comparison)
    return {
        "id": comparison.id,
        "title": comparison.title,
        "created_at": comparison.created_at,
        "runs": [crud.run_public(run=r, blobs=blobs, with_report=True) for r in runs],
    }
