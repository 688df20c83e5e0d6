"""``/api/runs``: create (validated without torch, enqueued after commit), list, read."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, status

from backend import crud
from backend.api.deps import (
    BlobsDep,
    CatalogueDep,
    CurrentUser,
    PageDep,
    QueueDep,
    SessionDep,
    SettingsDep,
)
from backend.catalogue import checkpoint_params, validate_measures
from backend.core.config import Settings
from backend.core.errors import ServiceError, error_responses
from backend.schemas import RunCreate, RunPublic, RunsPublic, RunStatus
from genscope.io.dataset_names import BUILTIN_DATASETS, TORCHVISION_DATASETS

log = logging.getLogger("genscope.api")

#: Parameter names whose value is a memory budget in MiB (``ntk.spectrum.max_memory_mb``).
MEMORY_PARAM_SUFFIX = "_mb"
#: Parameter names whose value is a number of examples held in memory at once.
BATCH_PARAMS = frozenset({"batch_size", "chunk_size"})


def memory_caps(settings: Settings) -> tuple[tuple[str, int, str], ...]:
    """``(kind, cap, setting)`` of the memory-related parameter kinds."""
    return (
        ("memory", settings.max_measure_memory_mb, "GENSCOPE_MAX_MEASURE_MEMORY_MB"),
        ("batch", settings.max_measure_batch, "GENSCOPE_MAX_MEASURE_BATCH"),
    )


def memory_kind(param: dict[str, Any]) -> str | None:
    """``"memory"`` for a memory budget (MiB), ``"batch"`` for examples held at once, else None."""
    if param.get("type") not in ("int", "float"):
        return None
    name = str(param.get("name", ""))
    if name.endswith(MEMORY_PARAM_SUFFIX):
        return "memory"
    if name in BATCH_PARAMS:
        return "batch"
    return None


def cap_memory_params(
    catalogue: list[dict[str, Any]],
    measures: list[str],
    params: dict[str, dict[str, Any]],
    settings: Settings,
) -> dict[str, dict[str, Any]]:
    """The run's parameters with every memory-related one within the server's caps.

    A value given above its cap answers 422 ``bad_parameter`` naming the cap and its setting; a
    default above the cap (a server configured below the engine's default) is lowered to the cap
    and stored with the run, so that the worker uses it.

    Raises:
        ServiceError: ``bad_parameter`` for a given value above its cap.
    """
    caps = {kind: (cap, setting) for kind, cap, setting in memory_caps(settings)}
    by_id = {m["id"]: m for m in catalogue}
    out = {measure_id: dict(values) for measure_id, values in params.items()}
    for measure_id in measures:
        for param in by_id[measure_id].get("params", []):
            kind = memory_kind(param)
            if kind is None:
                continue
            cap, setting = caps[kind]
            name = param["name"]
            given = out.get(measure_id, {}).get(name)
            if given is not None:
                if given > cap:
                    raise ServiceError(
                        "bad_parameter",
                        f"{measure_id}.{name} is at most {cap} on this server ({setting}), "
                        f"got {given}",
                        {"param": f"{measure_id}.{name}", "max": cap, "setting": setting},
                    )
            elif isinstance(param.get("default"), (int, float)) and param["default"] > cap:
                out.setdefault(measure_id, {})[name] = cap
    return out


router = APIRouter(prefix="/runs", tags=["runs"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunPublic,
    responses=error_responses(400, 401, 404, 422),
)
def create_run(
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    catalogue: CatalogueDep,
    queue: QueueDep,
    blobs: BlobsDep,
) -> Any:
    """Queue an analysis of one checkpoint on one dataset; answers at once with the run.

    The run row is committed first, then its id is sent to the broker. If the broker is down the
    run stays ``queued`` and recovery re-sends it.
    """
    checkpoint = crud.get_checkpoint(session, checkpoint_id=body.checkpoint_id, user=user)
    dataset_row = None
    if body.dataset not in BUILTIN_DATASETS and body.dataset not in TORCHVISION_DATASETS:
        try:
            dataset_row = crud.get_dataset(session, dataset_id=body.dataset, user=user)
        except ServiceError:
            raise ServiceError(
                "bad_dataset",
                f"unknown dataset {body.dataset!r}: use a built-in spec "
                f"({', '.join(BUILTIN_DATASETS)}) or the id of an uploaded dataset",
                {"dataset": body.dataset},
            ) from None
    measures, params = validate_measures(body.measures, body.params)
    params = cap_memory_params(catalogue, measures, params, settings)
    for measure_id, name, value in checkpoint_params(params):
        try:  # another of the caller's checkpoints (e.g. the other end of an interpolation)
            crud.get_checkpoint(session, checkpoint_id=value, user=user)
        except ServiceError:
            raise ServiceError(
                "bad_parameter",
                f"{measure_id}.{name} must be the id of one of your checkpoints, got {value!r}",
                {"param": f"{measure_id}.{name}"},
            ) from None
    options = dict(settings.analysis_defaults)
    if body.options is not None:
        options.update(body.options.model_dump(exclude_none=True))
    run = crud.create_run(
        session,
        user=user,
        checkpoint=checkpoint,
        dataset=body.dataset,
        dataset_row=dataset_row,
        measures=measures,
        params=params,
        options=options,
        queue=settings.run_queue,
    )
    session.commit()
    try:
        queue.send(run.id, run.queue)
        crud.mark_enqueued(session, run_id=run.id)
        session.commit()
    except Exception:
        log.exception("could not enqueue run %s; recovery will re-send it", run.id)
        session.rollback()
    session.refresh(run)
    return crud.run_public(run=run, blobs=blobs, with_report=False)


@router.get("", response_model=RunsPublic, responses=error_responses(401, 422))
def list_runs(
    session: SessionDep,
    user: CurrentUser,
    blobs: BlobsDep,
    page: PageDep,
    status: RunStatus | None = None,
) -> Any:
    """The caller's runs, newest first (without reports; read one run for its report)."""
    rows, count = crud.list_runs(
        session, user=user, offset=page.offset, limit=page.limit, status=status
    )
    return {
        "data": [crud.run_public(run=r, blobs=blobs, with_report=False) for r in rows],
        "count": count,
    }


@router.get("/{run_id}", response_model=RunPublic, responses=error_responses(401, 404))
def read_run(
    run_id: str, session: SessionDep, user: CurrentUser, blobs: BlobsDep, report: bool = True
) -> Any:
    """One run: status, progress, error, and the report once succeeded (``report=false`` omits
    it, for cheap polling)."""
    run = crud.get_run(session, run_id=run_id, user=user)
    return crud.run_public(run=run, blobs=blobs, with_report=report)
