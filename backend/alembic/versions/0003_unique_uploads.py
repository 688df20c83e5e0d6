"""one checkpoint/dataset row per user and content: unique indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 07:00:00

Identical uploads sent at the same time each passed the "already stored?" check and each
inserted a row. The database now decides: a unique index on ``(user_id, sha256, config_key)`` of
``checkpoints`` (``config_key`` = sha256 of ``[arch, arch_config]`` as sorted compact JSON, a new
column) and on ``(user_id, sha256)`` of ``datasets``.

Rows that are already duplicates are merged before the index is built: the oldest row of each
group is kept, the runs of the others (``checkpoint_id``, ``dataset_id``, ``dataset``, and
checkpoint ids inside ``params``) are pointed at it, then the others are deleted. Nothing is
recreated (SQLite's batch mode would drop and copy ``checkpoints``, and the drop would cascade
to the runs): the column is added with ``ALTER TABLE`` and the constraints are unique indexes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_checkpoints = sa.table(
    "checkpoints",
    sa.column("id", sa.String),
    sa.column("user_id", sa.Integer),
    sa.column("sha256", sa.String),
    sa.column("arch", sa.String),
    sa.column("arch_config", sa.JSON),
    sa.column("config_key", sa.String),
    sa.column("created_at", sa.DateTime),
)
_datasets = sa.table(
    "datasets",
    sa.column("id", sa.String),
    sa.column("user_id", sa.Integer),
    sa.column("sha256", sa.String),
    sa.column("created_at", sa.DateTime),
)
_runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("user_id", sa.Integer),
    sa.column("checkpoint_id", sa.String),
    sa.column("dataset", sa.String),
    sa.column("dataset_id", sa.String),
    sa.column("params", sa.JSON),
)


def _config_key(arch: str | None, arch_config: Any) -> str:
    """As ``backend.models.checkpoint_config_key`` at this revision."""
    text = json.dumps(
        [arch, arch_config or None], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _replace_ids(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` with every string equal to a key of ``mapping`` replaced."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_ids(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_ids(v, mapping) for v in value]
    return value


def _groups(rows: list[Any], key: Any) -> dict[str, str]:
    """``{duplicate id: kept id}``: the oldest row of each group is kept."""
    by_key: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        by_key[key(row)].append(row)
    merged: dict[str, str] = {}
    for members in by_key.values():
        members.sort(key=lambda r: (r.created_at, r.id))
        merged.update({r.id: members[0].id for r in members[1:]})
    return merged


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column(
        "checkpoints",
        sa.Column("config_key", sa.String(length=64), nullable=False, server_default=""),
    )
    rows = conn.execute(
        sa.select(
            _checkpoints.c.id,
            _checkpoints.c.user_id,
            _checkpoints.c.sha256,
            _checkpoints.c.arch,
            _checkpoints.c.arch_config,
            _checkpoints.c.created_at,
        )
    ).all()
    keys = {r.id: _config_key(r.arch, r.arch_config) for r in rows}
    for row_id, key in keys.items():
        conn.execute(
            sa.update(_checkpoints).where(_checkpoints.c.id == row_id).values(config_key=key)
        )
    checkpoints = _groups(rows, lambda r: (r.user_id, r.sha256, keys[r.id]))
    datasets = _groups(
        conn.execute(
            sa.select(
                _datasets.c.id, _datasets.c.user_id, _datasets.c.sha256, _datasets.c.created_at
            )
        ).all(),
        lambda r: (r.user_id, r.sha256),
    )
    if checkpoints or datasets:
        for dup, kept in checkpoints.items():
            conn.execute(
                sa.update(_runs).where(_runs.c.checkpoint_id == dup).values(checkpoint_id=kept)
            )
        for dup, kept in datasets.items():
            conn.execute(
                sa.update(_runs)
                .where(_runs.c.dataset_id == dup)
                .values(dataset_id=kept, dataset=kept)
            )
        # checkpoint-valued measure parameters (e.g. the other end of an interpolation)
        for run in conn.execute(sa.select(_runs.c.id, _runs.c.params)).all():
            params = _replace_ids(run.params, checkpoints) if run.params else run.params
            if params != run.params:
                conn.execute(sa.update(_runs).where(_runs.c.id == run.id).values(params=params))
        if checkpoints:
            conn.execute(sa.delete(_checkpoints).where(_checkpoints.c.id.in_(list(checkpoints))))
        if datasets:
            conn.execute(sa.delete(_datasets).where(_datasets.c.id.in_(list(datasets))))
    op.create_index(
        "uq_checkpoints_user_content",
        "checkpoints",
        ["user_id", "sha256", "config_key"],
        unique=True,
    )
    op.create_index("uq_datasets_user_content", "datasets", ["user_id", "sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_datasets_user_content", table_name="datasets")
    op.drop_index("uq_checkpoints_user_content", table_name="checkpoints")
    # a plain ALTER TABLE (SQLite >= 3.35 and PostgreSQL): no table copy, no cascade
    op.execute("ALTER TABLE checkpoints DROP COLUMN config_key")
