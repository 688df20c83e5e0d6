"""``/api/checkpoints``: upload (streamed, inspected in a subprocess), list, read."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import BlobsDep, CurrentUser, PageDep, SessionDep, SettingsDep
from backend.blobs import BlobStore
from backend.core.config import Settings
from backend.core.errors import ServiceError, error_responses
from backend.inspection import inspect_checkpoint
from backend.models import User
from backend.schemas import (
    CheckpointPublic,
    CheckpointsPublic,
    stored_text,
    upload_name,
    utf8_text,
)
from backend.uploads import Upload, receive_upload
from genscope.io.formats import accepted_formats, suffix_summary

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])

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
                            "description": "the checkpoint, recognised by its content: "
                            + "; ".join(
                                f"{f.title} ({'/'.join(f.suffixes)})" for f in accepted_formats()
                            ),
                        },
                        "name": {"type": "string"},
                        "arch": {"type": "string", "description": "zoo architecture"},
                        "arch_config": {"type": "string", "description": "JSON object"},
                    },
                }
            }
        },
    }
}


def _arch_config(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ServiceError(
            "bad_architecture", f"arch_config is not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    except (ValueError, RecursionError) as exc:  # over-long integers, absurd nesting
        raise ServiceError(
            "bad_architecture", f"arch_config cannot be read ({type(exc).__name__})"
        ) from None
    if not isinstance(value, dict):
        raise ServiceError("bad_architecture", "arch_config must be a JSON object")
    return utf8_text(value, field="arch_config")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckpointPublic,
    responses=error_responses(400, 401, 413, 415, 422, 502, 504, 507),
    openapi_extra=_UPLOAD_BODY,
    summary=f"Upload a checkpoint ({suffix_summary()})",
)
async def upload_checkpoint(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    blobs: BlobsDep,
) -> Any:
    """Stream the file into the blob store, inspect it safely, store one row.

    The same content with the same architecture is stored once per user: a second upload answers
    the existing checkpoint. Only the streaming runs on the event loop; the database and the
    inspection subprocess run in the thread pool (a blocking call on the loop would stall every
    other request, and under load deadlock on the connection pool).
    """
    upload = await receive_upload(
        request,
        blobs,
        settings.max_upload_bytes,
        max_fields=settings.max_form_fields,
        max_form_bytes=settings.max_form_bytes,
    )
    return await run_in_threadpool(_store_checkpoint, upload, session, settings, user, blobs)


def _store_checkpoint(
    upload: Upload, session: Session, settings: Settings, user: User, blobs: BlobStore
) -> Any:
    try:
        name = upload_name(upload.fields.get("name"), upload.filename)
        arch = upload.fields.get("arch") or None
        if arch is not None:
            stored_text(arch, field="arch", max_length=64)
        arch_config = _arch_config(upload.fields.get("arch_config"))
        sha = upload.writer.sha256
        existing = crud.find_checkpoint(
            session, sha256=sha, arch=arch, arch_config=arch_config, user=user
        )
        if existing is not None:
            upload.writer.discard()
            return existing
        known = crud.find_checkpoint(session, sha256=sha, arch=arch, arch_config=arch_config)
        if known is not None and blobs.exists(sha):
            info = dict(known.info)
        else:
            info = inspect_checkpoint(
                upload.writer.path,
                arch,
                arch_config,
                settings.inspect_timeout_seconds,
                settings,
            )
        blob_sha = upload.writer.commit()
    finally:
        upload.writer.discard()
    row = crud.create_checkpoint(
        session,
        user=user,
        name=name or blob_sha[:12],
        sha256=blob_sha,
        size=upload.writer.size,
        info=info,
        arch=arch,
        arch_config=arch_config,
    )
    session.commit()
    return row


@router.get("", response_model=CheckpointsPublic, responses=error_responses(401, 422))
def list_checkpoints(session: SessionDep, user: CurrentUser, page: PageDep) -> Any:
    """The caller's checkpoints, newest first."""
    rows, count = crud.list_checkpoints(session, user=user, offset=page.offset, limit=page.limit)
    return {"data": rows, "count": count}


@router.get(
    "/{checkpoint_id}", response_model=CheckpointPublic, responses=error_responses(401, 404)
)
def read_checkpoint(checkpoint_id: str, session: SessionDep, user: CurrentUser) -> Any:
    """One checkpoint of the caller."""
    return crud.get_checkpoint(session, checkpoint_id=checkpoint_id, user=user)
