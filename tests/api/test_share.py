"""``/api/share/{token}`` (backend/api/routes/share.py): a shared comparison opens while its link
is live and answers 404 once the link has expired, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import upload_checkpoint


def test_share_links_can_expire(client: Any, tiny_checkpoint: bytes) -> None:
    from sqlalchemy import update

    from backend.core.db import session_scope, utcnow
    from backend.models import ShareLink

    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    run = client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons"}).json()["id"]
    created = client.post("/api/comparisons", json={"run_ids": [run], "share_expires_in_hours": 2})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["share_expires_at"] and body["shared"]
    token = body["share_url"].rsplit("/", 1)[-1]
    assert client.get(f"/api/share/{token}").status_code == 200
    never = client.post(f"/api/comparisons/{body['id']}/share", json={}).json()
    assert never["share_expires_at"] is None
    assert (
        client.post(f"/api/comparisons/{body['id']}/share", json={"expires_in_hours": 0})
    ).status_code == 422
    with session_scope(client.settings.sqlalchemy_url) as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.expires_at.is_not(None))
            .values(expires_at=utcnow().replace(year=2000))
        )
    assert client.get(f"/api/share/{token}").status_code == 404  # expired
    never_token = never["share_url"].rsplit("/", 1)[-1]
    assert client.get(f"/api/share/{never_token}").status_code == 200
