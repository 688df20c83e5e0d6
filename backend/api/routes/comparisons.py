"""``/api/comparisons``: runs side by side, with revocable read-only share links."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, status

from backend import crud
from backend.api.deps import BlobsDep, CurrentUser, PageDep, SessionDep, SettingsDep, base_url
from backend.core.db import utcnow
from backend.core.errors import error_responses
from backend.models import Comparison
from backend.run_state import SUCCEEDED
from backend.schemas import (
    ComparisonCreate,
    ComparisonPublic,
    ComparisonsPublic,
    ShareCreate,
    ShareRevoked,
)
from genscope.study import study

router = APIRouter(prefix="/comparisons", tags=["comparisons"])


def _expiry(hours: float | None) -> datetime | None:
    return None if hours is None else utcnow() + timedelta(hours=hours)


def _public(
    session: Any,
    comparison: Comparison,
    base: str,
    share_token: str | None = None,
    share_expires_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": comparison.id,
        "title": comparison.title,
        "run_ids": list(comparison.run_ids or []),
        "created_at": comparison.created_at,
        "shared": crud.active_share_count(session, comparison=comparison) > 0,
        "share_url": f"{base}/share/{share_token}" if share_token else None,
        "url": f"{base}/compare/{comparison.id}",
        "share_expires_at": share_expires_at,
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ComparisonPublic,
    responses=error_responses(400, 401, 404, 422),
)
def create_comparison(
    body: ComparisonCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Any:
    """Compare some of the caller's runs; answers the share link (shown this once)."""
    comparison = crud.create_comparison(
        session,
        user=user,
        run_ids=body.run_ids,
        title=body.title,
        max_runs=settings.max_runs_per_comparison,
    )
    expires_at = _expiry(body.share_expires_in_hours)
    token = crud.create_share_link(session, comparison=comparison, expires_at=expires_at)
    session.commit()
    return _public(session, comparison, base_url(request, settings), token, expires_at)


@router.get("", response_model=ComparisonsPublic, responses=error_responses(401, 422))
def list_comparisons(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUser, page: PageDep
) -> Any:
    """The caller's comparisons, newest first."""
    rows, count = crud.list_comparisons(session, user=user, offset=page.offset, limit=page.limit)
    base = base_url(request, settings)
    return {"data": [_public(session, c, base) for c in rows], "count": count}


@router.get(
    "/{comparison_id}", response_model=ComparisonPublic, responses=error_responses(401, 404)
)
def read_comparison(
    comparison_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Any:
    """One comparison of the caller."""
    comparison = crud.get_comparison(session, comparison_id=comparison_id, user=user)
    return _public(session, comparison, base_url(request, settings))


@router.post(
    "/{comparison_id}/share",
    status_code=status.HTTP_201_CREATED,
    response_model=ComparisonPublic,
    responses=error_responses(400, 401, 404, 422),
)
def create_share(
    comparison_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    body: ShareCreate | None = None,
) -> Any:
    """A new share link for the comparison, optionally expiring (earlier links keep working
    until revoked or expired)."""
    comparison = crud.get_comparison(session, comparison_id=comparison_id, user=user)
    expires_at = _expiry(body.expires_in_hours if body else None)
    token = crud.create_share_link(session, comparison=comparison, expires_at=expires_at)
    session.commit()
    return _public(session, comparison, base_url(request, settings), token, expires_at)


@router.delete(
    "/{comparison_id}/share", response_model=ShareRevoked, responses=error_responses(401, 404)
)
def revoke_share(comparison_id: str, session: SessionDep, user: CurrentUser) -> Any:
    """Revoke the comparison's share links: they stop working at once."""
    comparison = crud.get_comparison(session, comparison_id=comparison_id, user=user)
    revoked = crud.revoke_share_links(session, comparison=comparison)
    session.commit()
    return {"id": comparison.id, "revoked": revoked}


@router.get(
    "/{comparison_id}/study",
    response_model=dict[str, Any],
    responses=error_responses(401, 404),
)
def study_comparison(
    comparison_id: str, session: SessionDep, blobs: BlobsDep, user: CurrentUser
) -> Any:
    """Which measure predicts the gap across the comparison's finished runs (schema
    ``genscope.study/1``): Kendall τ-a per measure with bootstrap intervals (Jiang et al. 2020)."""
    comparison = crud.get_comparison(session, comparison_id=comparison_id, user=user)
    runs = [
        r for r in crud.comparison_runs(session, comparison=comparison) if r.status == SUCCEEDED
    ]
    reports = [crud.run_report(run=r, blobs=blobs) for r in runs]
    pairs = [(r.id, rep) for r, rep in zip(runs, reports, strict=True) if rep is not None]
    return study([rep for _, rep in pairs], names=[run_id for run_id, _ in pairs])
