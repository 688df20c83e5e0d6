"""``/api/measures`` (backend/api/routes/measures.py): the catalogue a run can ask for is the
engine's registry (ids in order, groups, directions, parameter names), on SQLite and PostgreSQL.
How runs validate their measures against it is in tests/api/test_runs.py."""

from __future__ import annotations

from typing import Any


def test_catalogue_lists_every_registered_measure(client: Any) -> None:
    from genscope.measures.registry import GROUPS, all_measures

    answer = client.get("/api/measures")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    registered = {m.id: m.describe() for m in all_measures()}
    assert [m["id"] for m in body["data"]] == list(registered)
    assert body["count"] == len(body["data"]) == len(registered)
    assert body["groups"] == ["all", *GROUPS]
    for listed in body["data"]:
        engine = registered[listed["id"]]
        assert (listed["group"], listed["direction"]) == (engine["group"], engine["direction"])
        assert listed["forms"] == engine["forms"]
        assert [p["name"] for p in listed["params"]] == [p["name"] for p in engine["params"]]
