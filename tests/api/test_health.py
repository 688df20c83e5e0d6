"""``/api/health`` (backend/api/routes/health.py): the database, the broker and the workers, on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any


def test_health(client: Any) -> None:
    answer = client.get("/api/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert isinstance(body["workers"], list)
