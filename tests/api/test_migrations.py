"""Migration 0003 (one row per user and content), on SQLite and PostgreSQL: a database at 0002
with duplicate uploads and runs pointing at them is upgraded; the duplicates are merged into the
oldest row and the runs (``checkpoint_id``, ``dataset_id``, ``dataset``, checkpoint ids inside
``params``) point at the kept rows. ``runs.dataset`` holds an uploaded dataset's id (as
``POST /api/runs`` stores ``body.dataset``), so it is re-pointed like ``dataset_id``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import command

from backend.core.db import alembic_config, get_engine


def _upgrade(url: str, revision: str) -> None:
    engine = get_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def _insert(conn: Any, table: str, **values: Any) -> None:
    meta = sa.MetaData()
    t = sa.Table(table, meta, autoload_with=conn)
    conn.execute(sa.insert(t).values(**values))


def test_0003_merges_duplicates_and_repoints_runs(isolated_db_url: str) -> None:
    url = isolated_db_url
    _upgrade(url, "0002")
    engine = get_engine(url)
    t0 = datetime(2026, 1, 1)
    with engine.begin() as conn:
        _insert(conn, "users", id=1, name="u1", is_active=True, created_at=t0)
        _insert(conn, "users", id=2, name="u2", is_active=True, created_at=t0)
        ckpt = {"sha256": "a" * 64, "size": 1, "format": "safetensors", "num_params": 1}
        cfg = {"input_dim": 2, "widths": [8], "num_classes": 2}
        for i, (cid, user, when) in enumerate(
            [("c_old", 1, t0), ("c_dup", 1, t0 + timedelta(hours=1)), ("c_u2", 2, t0)]
        ):
            _insert(
                conn,
                "checkpoints",
                id=cid,
                user_id=user,
                name=f"n{i}",
                arch="mlp",
                arch_config=cfg,
                info={},
                created_at=when,
                **ckpt,
            )
        # same bytes, another architecture: not a duplicate
        _insert(
            conn,
            "checkpoints",
            id="c_other",
            user_id=1,
            name="o",
            arch="mlp",
            arch_config={**cfg, "widths": [4]},
            info={},
            created_at=t0,
            **ckpt,
        )
        data = {"sha256": "b" * 64, "size": 1, "format": "npz", "num_classes": 2}
        for did, when in (("d_old", t0), ("d_dup", t0 + timedelta(hours=1))):
            _insert(
                conn,
                "datasets",
                id=did,
                user_id=1,
                name=did,
                info={},
                created_at=when,
                n_train=1,
                n_test=1,
                **data,
            )
        _insert(
            conn,
            "runs",
            id="r1",
            user_id=1,
            checkpoint_id="c_dup",
            dataset="d_dup",
            dataset_id="d_dup",
            measures=["landscape.interpolate"],
            params={"landscape.interpolate": {"other": "c_dup"}},
            options={},
            status="succeeded",
            progress=1.0,
            attempts=1,
            queue="cpu",
            created_at=t0,
        )
    _upgrade(url, "head")
    with engine.begin() as conn:
        ckpts = {
            r.id: r.config_key
            for r in conn.execute(sa.text("SELECT id, config_key FROM checkpoints"))
        }
        assert set(ckpts) == {"c_old", "c_u2", "c_other"}
        assert all(len(k) == 64 for k in ckpts.values())
        datasets = {r.id for r in conn.execute(sa.text("SELECT id FROM datasets"))}
        assert datasets == {"d_old"}
        run = conn.execute(
            sa.text("SELECT checkpoint_id, dataset, dataset_id, params FROM runs")
        ).one()
        assert run.checkpoint_id == "c_old"
        assert run.dataset == "d_old" and run.dataset_id == "d_old"
        params = run.params if isinstance(run.params, dict) else json.loads(run.params)
        assert params == {"landscape.interpolate": {"other": "c_old"}}
