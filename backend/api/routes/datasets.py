"""``/api/datasets``: built-in specs and uploaded npz/safetensors files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import BlobsDep, CurrentUser, SessionDep, SettingsDep
from backend.blobs import BlobStore, StorageFull, is_no_space
from backend.core.config import Settings
from backend.core.errors import error_responses
from backend.inspection import inspect_dataset
from backend.models import DatasetFile, User
from backend.schemas import DatasetPublic, DatasetsPublic, upload_name
from backend.uploads import Upload, receive_upload
from genscope.io.dataset_names import BUILTIN_DATASETS

router = APIRouter(prefix="/datasets", tags=["datasets"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "npz or safetensors: x_train, y_train[, x_test, y_test]",
                        },
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}


def dataset_public(row: DatasetFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": "upload",
        "name": row.name,
        "sha256": row.sha256,
        "format": row.format,
        "n_train": row.n_train,
        "n_test": row.n_test,
        "num_classes": row.num_classes,
        "input_shape": row.info.get("input_shape"),
        "created_at": row.created_at,
    }


def _inspect_with_suffix(
    path: Path, fmt: str, timeout: float, settings: Settings
) -> dict[str, Any]:
    """``genscope inspect --dataset`` picks the reader by suffix: give it a named link."""
    link = path.with_name(f"{path.name}.{'safetensors' if fmt == 'safetensors' else 'npz'}")
    try:
        os.symlink(path, link)
    except OSError as exc:
        if is_no_space(exc):
            raise StorageFull(path.parent, 0) from None
        raise
    try:
        return inspect_dataset(link, timeout, settings)
    finally:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=error_responses(400, 401, 413, 415, 422, 502, 504, 507),
    openapi_extra=_UPLOAD_BODY,
    summary="Upload a dataset (npz or safetensors arrays)",
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    blobs: BlobsDep,
) -> Any:
    """Stream the arrays into the blob store, check them in a subprocess, store one row."""
    upload = await receive_upload(
        request,
        blobs,
        settings.max_upload_bytes,
        max_fields=settings.max_form_fields,
        max_form_bytes=settings.max_form_bytes,
    )
    return await run_in_threadpool(_store_dataset, upload, session, settings, user, blobs)


def _store_dataset(
    upload: Upload, session: Session, settings: Settings, user: User, blobs: BlobStore
) -> Any:
    """Inspect and store a received dataset upload (in the thread pool: blocking work)."""
    fmt = "safetensors" if upload.filename.lower().endswith(".safetensors") else "npz"
    try:
        name = upload_name(upload.fields.get("name"), upload.filename)
        existing = crud.find_dataset(session, sha256=upload.writer.sha256, user=user)
        if existing is not None:
            return dataset_public(existing)
        info = _inspect_with_suffix(
            upload.writer.path, fmt, settings.inspect_timeout_seconds, settings
        )
        sha = upload.writer.commit()
    finally:
        upload.writer.discard()
    row = crud.create_dataset(
        session,
        user=user,
        name=name or sha[:12],
        sha256=sha,
        size=upload.writer.size,
        fmt=fmt,
        info=info,
    )
    session.commit()
    return dataset_public(row)


@router.get("", response_model=DatasetsPublic, responses=error_responses(401))
def list_datasets(session: SessionDep, user: CurrentUser) -> Any:
    """The built-in datasets, then the caller's uploads (newest first)."""
    items: list[dict[str, Any]] = [
        {"id": name, "kind": "builtin", "name": name, "description": text}
        for name, text in BUILTIN_DATASETS.items()
    ]
    items += [dataset_public(row) for row in crud.list_datasets(session, user=user)]
    return {"data": items, "count": len(items)}


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=error_responses(401, 404))
def read_dataset(dataset_id: str, session: SessionDep, user: CurrentUser) -> Any:
    """One dataset: a built-in name or an uploaded dataset's id."""
    if dataset_id in BUILTIN_DATASETS:
        return {
            "id": dataset_id,
            "kind": "builtin",
            "name": dataset_id,
            "description": BUILTIN_DATASETS[dataset_id],
        }
    return dataset_public(crud.get_dataset(session, dataset_id=dataset_id, user=user))
