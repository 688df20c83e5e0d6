"""``/api/measures``: the engine's measure catalogue (ids, groups, parameters, result schemas),
from the measures' declarations (:mod:`backend.catalogue`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.api.deps import CatalogueDep, CurrentUser
from backend.core.errors import error_responses
from backend.schemas import MeasuresPublic

router = APIRouter(prefix="/measures", tags=["measures"])


@router.get("", response_model=MeasuresPublic, responses=error_responses(401))
def list_measures(catalogue: CatalogueDep, _user: CurrentUser) -> Any:
    """Every measure a run can ask for, and the group names."""
    from genscope.measures.registry import GROUPS

    return {"data": catalogue, "count": len(catalogue), "groups": ["all", *GROUPS]}
