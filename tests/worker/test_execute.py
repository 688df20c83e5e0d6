"""The task's logic in-process (no Celery), on SQLite and PostgreSQL: claim, compute, store,
idempotence, caching, engine errors, leases and recovery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from backend.core.db import session_scope, utcnow
from backend.models import MeasureResultRow, Run
from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint


def _run(client: Any, ckpt: str, measures: Any = "margin.output", dataset: str = "moons") -> str:
    answer = client.post(
        "/api/runs", json={"checkpoint_id": ckpt, "dataset": dataset, "measures": measures}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _rows(settings: Any, run_id: str) -> list[MeasureResultRow]:
    with session_scope(settings.sqlalchemy_url) as session:
        return list(
            session.scalars(select(MeasureResultRow).where(MeasureResultRow.run_id == run_id))
        )


def test_execute_stores_report_and_is_idempotent(client: Any, tiny_checkpoint: bytes) -> None:
    from worker.tasks import execute_run

    settings = client.settings
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    run_id = _run(client, ckpt, ["margin.output", "complexity.params"])
    assert execute_run(settings, run_id, "task-a") == "succeeded"
    body = client.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "succeeded" and body["progress"] == 1.0 and body["attempts"] == 1
    report = body["report"]
    assert report["schema"] == "genscope.report/1"
    assert list(report["measures"]) == ["margin.output", "complexity.params"]
    margins = report["measures"]["margin.output"]
    assert len(margins["values"]) == report["data"]["n_train"]
    assert [r["measure_id"] for r in body["results"]] == ["margin.output", "complexity.params"]
    assert body["results"][0]["value"] == margins["value"]
    # a duplicate message (another task id) finds the run finished: nothing is recomputed
    assert execute_run(settings, run_id, "task-b") == "skipped"
    assert len(_rows(settings, run_id)) == 2

    # the same question again is answered from the cache, instantly and identically
    second = _run(client, ckpt, ["margin.output", "complexity.params"])
    assert execute_run(settings, second, "task-c") == "succeeded"
    cached = client.get(f"/api/runs/{second}").json()
    assert all(r["cached"] for r in cached["results"])
    assert cached["report"]["measures"] == report["measures"]
    # a new measure is computed, the known one reused
    third = _run(client, ckpt, ["margin.output", "margin.normalized"])
    assert execute_run(settings, third, "task-d") == "succeeded"
    flags = {
        r["measure_id"]: r["cached"] for r in client.get(f"/api/runs/{third}").json()["results"]
    }
    assert flags == {"margin.output": True, "margin.normalized": False}


def test_engine_error_fails_the_run_with_its_code(client: Any) -> None:
    from worker.tasks import execute_run

    # a model for 3 inputs, analysed on the 2-D moons: the engine says shape_mismatch
    data = safetensors_bytes(mlp_state(input_dim=3, seed=3))
    config = {"input_dim": 3, "widths": [8], "num_classes": 2}
    ckpt = upload_checkpoint(client, data, config=config).json()["id"]
    run_id = _run(client, ckpt)
    assert execute_run(client.settings, run_id, "task-x") == "failed"
    body = client.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "shape_mismatch" and "shape" in body["error"]["message"]
    assert body["report"] is None


def test_claims_leases_and_recovery(client: Any, tiny_checkpoint: bytes) -> None:
    import pytest

    from backend.queue import get_run_queue
    from backend.recovery import recover
    from worker.progress import ClaimLost, RunProgress
    from worker.tasks import claim_run

    settings = client.settings
    url = settings.sqlalchemy_url
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    run_id = _run(client, ckpt)
    assert claim_run(settings, run_id, "A")
    assert not claim_run(settings, run_id, "B")  # A's lease is live
    assert claim_run(settings, run_id, "A")  # a retry of A's own message re-claims it
    with session_scope(url) as session:
        session.execute(
            update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(1))
        )
    assert claim_run(settings, run_id, "B")  # expired: B takes over
    progress = RunProgress(url, run_id, "A", interval=0.0, lease_seconds=5)
    with pytest.raises(ClaimLost):
        progress(0.5, "A is late")

    # B dies (lease expires): recovery re-queues it, then fails it when attempts are used up
    with session_scope(url) as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1), attempts=1)
        )
    outcome = recover(settings, get_run_queue(settings))
    assert run_id in outcome["resent"]
    with session_scope(url) as session:
        row = session.get(Run, run_id)
        assert row is not None and row.status == "queued" and row.worker_id is None
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                status="running",
                attempts=settings.max_attempts,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    outcome = recover(settings, get_run_queue(settings))
    assert run_id in outcome["failed"]
    body = client.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"

    # a queued run whose message may be lost is re-sent after the grace period
    stale = _run(client, ckpt)
    with session_scope(url) as session:
        session.execute(
            update(Run).where(Run.id == stale).values(enqueued_at=utcnow() - timedelta(hours=1))
        )
    assert stale in recover(settings, get_run_queue(settings))["resent"]


def test_a_failed_measure_does_not_fail_the_run(client: Any, tiny_checkpoint: bytes) -> None:
    """More eigenvalues than the model has parameters: that measure fails, the run succeeds."""
    from worker.tasks import execute_run

    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]  # 42 parameters
    measures = ["margin.output", "hessian.top_eigenvalues"]
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": measures,
            "params": {"hessian.top_eigenvalues": {"k": 43}},
        },
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    assert execute_run(client.settings, run_id, "task-k") == "succeeded"
    body = client.get(f"/api/runs/{run_id}").json()
    by_id = {r["measure_id"]: r for r in body["results"]}
    assert by_id["margin.output"]["status"] == "ok"
    failed = by_id["hessian.top_eigenvalues"]
    assert failed["status"] == "failed" and failed["error_code"] == "bad_parameter"
    report = body["report"]["measures"]["hessian.top_eigenvalues"]
    assert report["error"]["code"] == "bad_parameter"
    # failures are not cached: the next run computes the measure again
    again = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["hessian.top_eigenvalues"],
            "params": {"hessian.top_eigenvalues": {"k": 43}},
        },
    ).json()["id"]
    assert execute_run(client.settings, again, "task-k2") == "succeeded"
    assert client.get(f"/api/runs/{again}").json()["results"][0]["cached"] is False


def test_comparison_study_ranks_measures_over_finished_runs(client: Any) -> None:
    from worker.tasks import execute_run

    runs = []
    for seed in range(4):
        data = safetensors_bytes(mlp_state(seed=seed))
        ckpt = upload_checkpoint(client, data, name=f"m{seed}.safetensors").json()["id"]
        run_id = _run(client, ckpt, ["margin.output", "complexity.params"])
        assert execute_run(client.settings, run_id, f"task-{seed}") == "succeeded"
        runs.append(run_id)
    comparison = client.post("/api/comparisons", json={"run_ids": runs}).json()["id"]
    answer = client.get(f"/api/comparisons/{comparison}/study")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["schema"] == "genscope.study/1"
    ranked = {m["id"]: m for m in body["measures"]}
    assert "margin.output" in ranked and ranked["margin.output"]["runs"] == 4
    assert -1.0 <= ranked["margin.output"]["tau"] <= 1.0
    assert client.get("/api/comparisons/nope/study").status_code == 404

    # `genscope study --runs ID ...` reads the same reports through the HTTP API
    from genscope.cli import fetch_run_reports
    from genscope.errors import BadParameter
    from genscope.study import study

    reports = fetch_run_reports(client, runs)
    assert [r["model"]["sha256"] for r in reports] == [
        client.get(f"/api/runs/{r}").json()["report"]["model"]["sha256"] for r in runs
    ]
    assert study(reports, names=runs)["measures"] == body["measures"]
    queued = _run(
        client,
        upload_checkpoint(
            client, safetensors_bytes(mlp_state(seed=9)), name="q.safetensors"
        ).json()["id"],
    )
    with pytest.raises(BadParameter, match="has no report"):
        fetch_run_reports(client, [queued])


def test_interpolation_between_two_checkpoints_takes_checkpoint_ids(client: Any) -> None:
    from worker.tasks import execute_run

    first, second = (
        upload_checkpoint(
            client, safetensors_bytes(mlp_state(seed=s)), name=f"i{s}.safetensors"
        ).json()["id"]
        for s in (11, 12)
    )
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": first,
            "dataset": "moons",
            "measures": ["landscape.interpolate"],
            "params": {"landscape.interpolate": {"other": second, "points": 5}},
        },
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    assert execute_run(client.settings, run_id, "task-i") == "succeeded"
    result = client.get(f"/api/runs/{run_id}").json()["report"]["measures"]
    interp = result["landscape.interpolate"]
    assert interp["status"] == "ok" and interp["value"] is not None
    other_sha = client.get(f"/api/checkpoints/{second}").json()["sha256"]
    # the worker read the other checkpoint's blob, and the report names it by content, not path
    assert interp["other"] == interp["params"]["other"] == f"sha256:{other_sha}"
    for bad in ("/etc/passwd", "nope"):
        refused = client.post(
            "/api/runs",
            json={
                "checkpoint_id": first,
                "dataset": "moons",
                "measures": ["landscape.interpolate"],
                "params": {"landscape.interpolate": {"other": bad}},
            },
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "bad_parameter"
