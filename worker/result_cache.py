"""The result cache: a measure's stored result is reused by any later run that asks the same
question.

A measure's cache key hashes (checkpoint sha256 + architecture, dataset, measure id, canonical
params, options, engine version); the report header's key is the same without the measure. Only
results of ``succeeded`` runs with status ``ok`` are reused. The per-measure details live in the
blob store (content-addressed JSON), the queryable scalars in ``measure_results`` rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import run_state
from backend.blobs import BlobStore
from backend.core.config import Settings
from backend.core.db import session_scope
from backend.crud import canonical_json
from backend.models import MeasureResultRow, Run


def cache_key(**parts: Any) -> str:
    """The sha256 of the parts' canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def lookup(
    settings: Settings, keys: list[str], head_key: str, run_id: str, data_name: str
) -> tuple[dict[str, MeasureResultRow], dict[str, Any] | None]:
    """Stored successful results for these cache keys, and a report header for this run.

    The header comes from a run of the same user when there is one; a header stored by another
    user's run (same content, so the same ``head_key``) is used only with its user-given fields
    rewritten from this run (:func:`own_head`): a cached report never shows another user's
    names.
    """
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(
            select(MeasureResultRow)
            .join(Run, Run.id == MeasureResultRow.run_id)
            .where(
                MeasureResultRow.cache_key.in_(keys),
                MeasureResultRow.status == "ok",
                Run.status == run_state.SUCCEEDED,
            )
            .order_by(MeasureResultRow.id)
        )
        found = {row.cache_key: row for row in rows}
        this = session.get(Run, run_id)
        owner = this.user_id if this is not None else None
        head_run = session.scalars(
            select(Run)
            .where(Run.head_key == head_key, Run.status == run_state.SUCCEEDED)
            .order_by((Run.user_id == owner).desc(), Run.finished_at.desc())
            .limit(1)
        ).first()
        head = dict(head_run.report_head) if head_run and head_run.report_head else None
    return found, None if head is None else own_head(head, data_name)


def own_head(head: dict[str, Any], data_name: str) -> dict[str, Any]:
    """A stored report header made this run's: the only user-given field of a header is the
    dataset's display name (``data.name``; the model block holds content hashes and the
    architecture, ``settings`` the engine's own values), so it is set from this run."""
    data = dict(head.get("data") or {})
    data["name"] = data_name
    return {**head, "data": data}


def hide_blob_paths(measure: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint parameter's blob path becomes ``sha256:<hash>`` in the stored result, so
    that reports (and share pages) never show where the server keeps its files."""
    params = dict(data.get("params") or {})
    for p in measure.params:
        path = params.get(p.name)
        if p.checkpoint and isinstance(path, str):
            params[p.name] = f"sha256:{Path(path).name}"
            if data.get(p.name) == path:
                data = {**data, p.name: params[p.name]}
    return {**data, "params": params}


def assemble_results(
    blobs: BlobStore,
    selected: Sequence[Any],
    keys: Mapping[str, str],
    fresh: Mapping[str, dict[str, Any]],
    cached: Mapping[str, MeasureResultRow],
) -> list[dict[str, Any]]:
    """The run's results in the order asked: a freshly computed measure's details are stored as
    a new blob; a cached one points at the stored blob and the run it came from."""
    results = []
    for position, m in enumerate(selected):
        if m.id in fresh:
            data = hide_blob_paths(m, fresh[m.id])
            results.append(
                {
                    "position": position,
                    "measure_id": m.id,
                    "data": data,
                    "blob": blobs.put_json(data),
                    "cache_key": keys[m.id],
                    "cached_from": None,
                }
            )
        else:
            row = cached[keys[m.id]]
            results.append(
                {
                    "position": position,
                    "measure_id": m.id,
                    "data": blobs.get_json(row.blob_sha256),
                    "blob": row.blob_sha256,
                    "cache_key": keys[m.id],
                    "cached_from": row.run_id,
                }
            )
    return results


def add_result_rows(session: Session, run_id: str, results: Sequence[dict[str, Any]]) -> None:
    """One ``measure_results`` row per result (in the caller's transaction, beside the run's
    ``succeeded``)."""
    for r in results:
        data = r["data"]
        error = data.get("error") or {}
        value = data.get("value")
        session.add(
            MeasureResultRow(
                run_id=run_id,
                position=r["position"],
                measure_id=r["measure_id"],
                value=float(value) if isinstance(value, (int, float)) else None,
                status=str(data.get("status", "ok")),
                error_code=error.get("code"),
                error_message=error.get("message"),
                seconds=float(data.get("seconds") or 0.0),
                params=data.get("params") or {},
                cache_key=r["cache_key"],
                blob_sha256=r["blob"],
                cached_from=r["cached_from"],
            )
        )
