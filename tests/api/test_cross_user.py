"""No trace of one user in another's answers, on SQLite and PostgreSQL: a cached
report header is the run's own, an anonymous share view holds no ids and no worker name, share
links die with their owner's access, and identical uploads give one row per user."""

from __future__ import annotations

import io
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sqlalchemy import select, update

from backend import crud
from backend.core.db import session_scope
from backend.models import Checkpoint, Comparison, DatasetFile, Run, User
from tests.conftest import MOONS_MLP, upload_checkpoint


def _user(settings: Any, name: str) -> dict[str, str]:
    with session_scope(settings.sqlalchemy_url) as session:
        _, token = crud.create_user(session, name=name)
    return {"Authorization": f"Bearer {token}"}


def _npz(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(40, 2)).astype(np.float32),
        y_train=rng.integers(0, 2, 40),
        x_test=rng.normal(size=(10, 2)).astype(np.float32),
        y_test=rng.integers(0, 2, 10),
    )
    return buf.getvalue()


def _dataset(client: Any, data: bytes, name: str, headers: dict[str, str]) -> str:
    answer = client.post(
        "/api/datasets",
        files={"file": ("d.npz", io.BytesIO(data))},
        data={"name": name},
        headers=headers,
    )
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_a_cached_run_shows_its_own_dataset_name(make_client: Any, tiny_checkpoint: bytes) -> None:
    from worker.tasks import execute_run

    client = make_client(auth="tokens")
    alice, bob = _user(client.settings, "alice-c"), _user(client.settings, "bob-c")
    data = _npz()
    a_ckpt = upload_checkpoint(client, tiny_checkpoint, name="alice-model.st", headers=alice)
    b_ckpt = upload_checkpoint(client, tiny_checkpoint, name="bob-model.st", headers=bob)
    a_data = _dataset(client, data, "alice-secret-data", alice)
    b_data = _dataset(client, data, "bob-data", bob)
    body = {"measures": ["margin.output", "complexity.params"]}
    a_run = client.post(
        "/api/runs",
        json={**body, "checkpoint_id": a_ckpt.json()["id"], "dataset": a_data},
        headers=alice,
    ).json()["id"]
    assert execute_run(client.settings, a_run, "task-alice") == "succeeded"
    b_run = client.post(
        "/api/runs",
        json={**body, "checkpoint_id": b_ckpt.json()["id"], "dataset": b_data},
        headers=bob,
    ).json()["id"]
    assert execute_run(client.settings, b_run, "task-bob") == "succeeded"
    answer = client.get(f"/api/runs/{b_run}", headers=bob).json()
    assert all(r["cached"] for r in answer["results"])
    assert answer["report"]["data"]["name"] == "bob-data"
    text = json.dumps(answer)
    for trace in ("alice", a_run, a_ckpt.json()["id"], a_data, "task-alice"):
        assert trace not in text, trace


def _shared_setup(client: Any, tiny_checkpoint: bytes, owner: dict[str, str]) -> tuple[str, str]:
    from worker.tasks import execute_run

    ckpt = upload_checkpoint(client, tiny_checkpoint, headers=owner).json()["id"]
    data = _dataset(client, _npz(1), "owner-data", owner)
    run = client.post(
        "/api/runs",
        json={"checkpoint_id": ckpt, "dataset": data, "measures": "margin.output"},
        headers=owner,
    ).json()["id"]
    assert execute_run(client.settings, run, "task-share") == "succeeded"
    comparison = client.post("/api/comparisons", json={"run_ids": [run]}, headers=owner).json()
    return comparison["id"], comparison["share_url"].rsplit("/", 1)[-1]


def test_the_share_view_holds_no_ids_and_no_worker_name(
    make_client: Any, tiny_checkpoint: bytes
) -> None:
    client = make_client(auth="tokens")
    owner = _user(client.settings, "share-owner")
    comparison_id, token = _shared_setup(client, tiny_checkpoint, owner)
    shared = client.get(f"/api/share/{token}")
    assert shared.status_code == 200, shared.text
    with session_scope(client.settings.sqlalchemy_url) as session:
        ids = {str(i) for i in session.scalars(select(Run.id))}
        ids |= {str(i) for i in session.scalars(select(Run.worker_id)) if i}
        ids |= {str(i) for i in session.scalars(select(Checkpoint.id))}
        ids |= {str(i) for i in session.scalars(select(DatasetFile.id))}
        ids |= {str(i) for i in session.scalars(select(User.id))}
        ids |= {str(i) for i in session.scalars(select(User.name))}
        ids |= {str(i) for i in session.scalars(select(Comparison.id)) if i != comparison_id}
    ids |= {f"{socket.gethostname()}:{os.getpid()}", socket.gethostname()}
    leaked = [
        s for s in _strings(shared.json()) if s in ids or any(i in s for i in ids if len(i) >= 8)
    ]
    assert leaked == []
    assert shared.json()["runs"][0]["dataset"] == "owner-data"
    page = client.get(f"/share/{token}")
    assert page.status_code == 200 and "owner-data" in page.text


def test_share_links_die_when_the_owner_loses_access(
    make_client: Any, tiny_checkpoint: bytes
) -> None:
    client = make_client(auth="tokens")
    revoked = _user(client.settings, "owner-revoked")
    _, token = _shared_setup(client, tiny_checkpoint, revoked)
    assert client.get(f"/api/share/{token}").status_code == 200
    with session_scope(client.settings.sqlalchemy_url) as session:
        assert crud.revoke_user_tokens(session, name="owner-revoked") == 1
    assert client.get(f"/api/share/{token}").status_code == 404

    inactive = _user(client.settings, "owner-inactive")
    _, token = _shared_setup(client, tiny_checkpoint, inactive)
    assert client.get(f"/api/share/{token}").status_code == 200
    with session_scope(client.settings.sqlalchemy_url) as session:
        session.execute(update(User).where(User.name == "owner-inactive").values(is_active=False))
    assert client.get(f"/api/share/{token}").status_code == 404

    removed = _user(client.settings, "owner-removed")
    _, token = _shared_setup(client, tiny_checkpoint, removed)
    with session_scope(client.settings.sqlalchemy_url) as session:
        user = session.scalar(select(User).where(User.name == "owner-removed"))
        session.delete(user)
    assert client.get(f"/api/share/{token}").status_code == 404


def _count(settings: Any, model: Any, user: str) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        owner = session.scalar(select(User).where(User.name == user))
        return len(list(session.scalars(select(model).where(model.user_id == owner.id))))


def test_concurrent_identical_uploads_give_one_row(
    make_client: Any, tiny_checkpoint: bytes
) -> None:
    client = make_client(auth="tokens", max_inspections=10)
    alice, bob = _user(client.settings, "alice-u"), _user(client.settings, "bob-u")

    def send(_: int) -> Any:
        return upload_checkpoint(client, tiny_checkpoint, headers=alice)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, range(10)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert _count(client.settings, Checkpoint, "alice-u") == 1

    data = _npz(3)
    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(lambda _: _dataset(client, data, "same", alice), range(10)))
    assert len(set(ids)) == 1 and _count(client.settings, DatasetFile, "alice-u") == 1

    upload_checkpoint(client, tiny_checkpoint, headers=bob)
    assert _count(client.settings, Checkpoint, "bob-u") == 1
    other = {**MOONS_MLP, "widths": [8], "activation": "tanh"}
    answer = upload_checkpoint(client, tiny_checkpoint, config=other, headers=alice)
    if answer.status_code in (200, 201):  # a different architecture is a row of its own
        assert _count(client.settings, Checkpoint, "alice-u") == 2


def test_same_bytes_with_another_architecture_is_a_row_of_its_own(db_url: str) -> None:
    """The unique index holds the architecture: same user and bytes, another config, two rows;
    the same config again answers the stored row."""
    from backend.core.db import migrate

    migrate(db_url)
    with session_scope(db_url) as session:
        user, _ = crud.create_user(session, name=f"arch-{os.urandom(4).hex()}")
        sha = os.urandom(32).hex()
        info = {"format": "safetensors", "num_params": 1}

        def store(config: dict[str, Any]) -> Checkpoint:
            return crud.create_checkpoint(
                session,
                user=user,
                name="m",
                sha256=sha,
                size=1,
                info=info,
                arch="mlp",
                arch_config=config,
            )

        first = store(MOONS_MLP)
        other = store({**MOONS_MLP, "widths": [4]})
        again = store(dict(MOONS_MLP))
        assert other.id != first.id and again.id == first.id
