"""``/api/share/{token}``: a shared comparison, read-only, without authentication.

Anyone holding the link reads it, so the answer carries what the share page shows and nothing
that identifies the owner's other data: no run, checkpoint, dataset or user ids and no worker
name (:class:`backend.schemas.SharedRun`). The link stops working when it is revoked or expires,
and when its owner loses access (:func:`backend.crud.get_comparison_by_share_token`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import BlobsDep, CatalogueDep, SessionDep
from backend.blobs import BlobStore
from backend.catalogue import checkpoint_params
from backend.core.errors import NotFound, error_responses
from backend.models import Checkpoint, DatasetFile, Run
from backend.schemas import SharedComparison

router = APIRouter(prefix="/share", tags=["share"])


def _shared_params(
    session: Session, catalogue: list[dict[str, Any]], params: dict[str, Any]
) -> dict[str, Any]:
    """The run's parameters with checkpoint ids replaced by ``sha256:<hash>`` (as the report
    shows them)."""
    out = {measure_id: dict(values) for measure_id, values in params.items()}
    known = {m["id"] for m in catalogue}
    listed = {k: v for k, v in params.items() if k in known}
    for measure_id, name, value in checkpoint_params(listed):
        row = session.get(Checkpoint, value) if crud.plausible_id(value) else None
        out[measure_id][name] = f"sha256:{row.sha256}" if row is not None else None
    return out


def shared_run(
    session: Session, blobs: BlobStore, catalogue: list[dict[str, Any]], run: Run
) -> dict[str, Any]:
    """One run of a shared comparison (``SharedRun``)."""
    public = crud.run_public(run=run, blobs=blobs, with_report=True)
    dataset = run.dataset
    if run.dataset_id is not None:
        row = session.get(DatasetFile, run.dataset_id)
        dataset = row.name if row is not None else "(deleted dataset)"
    return {
        "checkpoint_name": public["checkpoint_name"],
        "status": public["status"],
        "progress": public["progress"],
        "message": public["message"],
        "error": public["error"],
        "dataset": dataset,
        "measures": public["measures"],
        "params": _shared_params(session, catalogue, public["params"]),
        "options": public["options"],
        "created_at": public["created_at"],
        "started_at": public["started_at"],
        "finished_at": public["finished_at"],
        "results": public["results"],
        "report": public["report"],
    }


@router.get("/{token}", response_model=SharedComparison, responses=error_responses(404))
def read_shared(token: str, session: SessionDep, blobs: BlobsDep, catalogue: CatalogueDep) -> Any:
    """The comparison this token opens, with every run's report; 404 when unknown, revoked,
    expired, or when its owner no longer has access."""
    comparison = crud.get_comparison_by_share_token(session, token=token)
    if comparison is None:
        raise NotFound("share link", "(token)")
    runs = crud.comparison_runs(session, comparison=comparison)
    return {
        "id": comparison.id,
        "title": comparison.title,
        "created_at": comparison.created_at,
        "runs": [shared_run(session, blobs, catalogue, r) for r in runs],
    }
