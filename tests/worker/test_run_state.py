"""The run's status (``backend.run_state``), on SQLite and PostgreSQL: the declared table of
transitions is what the writes do (every allowed transition works, every other one is refused
and leaves the row unchanged), a stale worker cannot overwrite a newer state, and no module
outside ``backend.run_state`` writes a run's status."""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import pytest
from sqlalchemy import Connection, select

from backend import run_state
from backend.core.db import get_engine, migrate, session_scope, utcnow
from backend.models import Checkpoint, MeasureResultRow, Run, User
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
MAX_ATTEMPTS = 3
TASK = "task-holding-the-claim"


@dataclass
class Db:
    url: str
    checkpoint_id: str
    user_id: int

    def new_run(self, status: str, **values: Any) -> str:
        """A run row put directly in ``status`` (expired lease, claimed by :data:`TASK`)."""
        fields: dict[str, Any] = {
            "task_id": TASK,
            "worker_id": "host:1",
            "attempts": 1,
            "lease_expires_at": utcnow() - timedelta(seconds=5),
            **values,
        }
        with session_scope(self.url) as session:
            run = Run(
                user_id=self.user_id,
                checkpoint_id=self.checkpoint_id,
                dataset="moons",
                measures=["margin.output"],
                params={},
                options={},
                queue="cpu",
                status=status,
                progress=0.25,
                message="as set up",
                **fields,
            )
            session.add(run)
            session.flush()
            return run.id

    def row(self, run_id: str) -> dict[str, Any]:
        with session_scope(self.url) as session:
            run = session.get(Run, run_id)
            assert run is not None
            return {c.key: getattr(run, c.key) for c in Run.__table__.columns}


@pytest.fixture
def db(isolated_db_url: str) -> Iterator[Db]:
    """A migrated database of its own with one user and one checkpoint."""
    migrate(isolated_db_url)
    with session_scope(isolated_db_url) as session:
        user = User(name="state-tests")
        session.add(user)
        session.flush()
        ckpt = Checkpoint(
            user_id=user.id, name="c", sha256="0" * 64, size=1, format="safetensors", num_params=1
        )
        session.add(ckpt)
        session.flush()
        handle = Db(isolated_db_url, ckpt.id, user.id)
    yield handle
    get_engine(isolated_db_url).dispose()


@dataclass(frozen=True)
class Event:
    """One function of ``backend.run_state``, called by the task that holds the claim."""

    name: str
    target: str
    call: Callable[[Connection, str], bool]
    setup: dict[str, Any] = field(default_factory=dict)


EVENTS = (
    Event(
        "claim",
        run_state.RUNNING,
        lambda c, r: run_state.claim(
            c, run_id=r, task_id=TASK, worker_id="w:2", lease_seconds=60, max_attempts=MAX_ATTEMPTS
        ),
    ),
    Event(
        "fail_out_of_attempts",
        run_state.FAILED,
        lambda c, r: run_state.fail_out_of_attempts(
            c, run_id=r, task_id=TASK, max_attempts=MAX_ATTEMPTS
        ),
        {"attempts": MAX_ATTEMPTS},
    ),
    Event(
        "fail",
        run_state.FAILED,
        lambda c, r: run_state.fail(c, run_id=r, code="bad_thing", message="m", task_id=TASK),
    ),
    Event(
        "fail without a claim",
        run_state.FAILED,
        lambda c, r: run_state.fail(c, run_id=r, code="bad_checkpoint", message="m"),
    ),
    Event("release", run_state.QUEUED, lambda c, r: run_state.release(c, run_id=r, task_id=TASK)),
    Event(
        "succeed",
        run_state.SUCCEEDED,
        lambda c, r: run_state.succeed(
            c, run_id=r, task_id=TASK, head_key="h" * 64, report_head={"schema": "x"}
        ),
    ),
    Event(
        "requeue_lost",
        run_state.QUEUED,
        lambda c, r: run_state.requeue_lost(c, run_id=r, max_attempts=MAX_ATTEMPTS, now=utcnow()),
    ),
    Event(
        "fail_lost",
        run_state.FAILED,
        lambda c, r: run_state.fail_lost(
            c, run_id=r, attempts=MAX_ATTEMPTS, max_attempts=MAX_ATTEMPTS, now=utcnow()
        ),
        {"attempts": MAX_ATTEMPTS},
    ),
)


def _apply(db: Db, event: Event, run_id: str) -> bool:
    with get_engine(db.url).begin() as conn:
        return event.call(conn, run_id)


def test_the_declared_table() -> None:
    from backend.schemas import RunStatus

    assert get_args(RunStatus) == run_state.STATUSES == tuple(run_state.ALLOWED_SOURCES)
    assert run_state.STATUSES == ("queued", "running", "succeeded", "failed")
    assert run_state.INITIAL == run_state.QUEUED
    assert {run_state.SUCCEEDED, run_state.FAILED} == run_state.FINISHED
    pairs = {(s, t) for t, sources in run_state.ALLOWED_SOURCES.items() for s in sources}
    assert pairs == {
        ("running", "queued"),
        ("queued", "running"),
        ("running", "running"),
        ("running", "succeeded"),
        ("queued", "failed"),
        ("running", "failed"),
    }
    for source in run_state.STATUSES:
        for target in run_state.STATUSES:
            assert run_state.allowed(source, target) == ((source, target) in pairs)
    # every status can be entered by some function, and the tests know every function
    assert {e.target for e in EVENTS} == set(run_state.STATUSES)
    public = {
        name
        for name, value in vars(run_state).items()
        if callable(value)
        and getattr(value, "__module__", "") == run_state.__name__
        and not name.startswith("_")
    }
    assert public - {"allowed", "renew"} == {e.name for e in EVENTS if " " not in e.name}


def _literal_values(annotation: Any) -> set[Any]:
    """The values of the ``Literal`` inside ``annotation`` (e.g. ``Literal[...] | None``)."""
    if getattr(annotation, "__origin__", None) is Literal:
        return set(get_args(annotation))
    return {v for arg in get_args(annotation) for v in _literal_values(arg)}


def _status_filter(router: Any, path: str) -> set[Any]:
    route = next(r for r in router.routes if r.path == path and "GET" in r.methods)
    param = next(p for p in route.dependant.query_params if p.name == "status")
    return _literal_values(param.field_info.annotation)


def test_the_status_filters_accept_the_declared_statuses() -> None:
    from backend.api.routes import runs

    assert _status_filter(runs.router, "/runs") == set(run_state.STATUSES)
    pages = pytest.importorskip("frontend.pages")
    assert _status_filter(pages.router, "/ui/runs") == {*run_state.STATUSES, ""}  # "": all


def test_every_allowed_transition_works_and_every_other_is_refused(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genscope.run_state")
    performed: set[tuple[str, str]] = set()
    for event in EVENTS:
        for source in run_state.STATUSES:
            run_id = db.new_run(source, **event.setup)
            before = db.row(run_id)
            caplog.clear()
            applied = _apply(db, event, run_id)
            after = db.row(run_id)
            expected = run_state.allowed(source, event.target)
            assert applied == expected, (event.name, source)
            if applied:
                performed.add((source, event.target))
                assert after["status"] == event.target, (event.name, source)
            else:
                assert after == before, (event.name, source)  # the row is untouched
                assert any(
                    "refused" in r.getMessage() and run_id in r.getMessage() for r in caplog.records
                ), (event.name, source)
    allowed = {(s, t) for t, sources in run_state.ALLOWED_SOURCES.items() for s in sources}
    assert performed == allowed  # each allowed transition is performed by some function


def test_what_each_transition_writes(db: Db) -> None:
    queued = db.new_run(run_state.QUEUED, task_id=None, worker_id=None, lease_expires_at=None)
    assert _apply(db, EVENTS[0], queued)  # claim
    row = db.row(queued)
    assert (row["status"], row["task_id"], row["worker_id"]) == ("running", TASK, "w:2")
    assert row["attempts"] == 2 and row["message"] == "starting" and row["progress"] == 0.0
    assert row["lease_expires_at"] > utcnow() and row["started_at"] is not None

    lost = db.new_run(run_state.RUNNING)
    assert _apply(db, next(e for e in EVENTS if e.name == "requeue_lost"), lost)
    row = db.row(lost)
    assert row["status"] == "queued" and row["task_id"] is None and row["worker_id"] is None
    assert row["enqueued_at"] is not None and row["lease_expires_at"] is None

    dead = db.new_run(run_state.RUNNING, attempts=MAX_ATTEMPTS)
    assert _apply(db, next(e for e in EVENTS if e.name == "fail_lost"), dead)
    row = db.row(dead)
    assert row["status"] == "failed" and row["error_code"] == "worker_lost"
    assert row["message"] == "failed: worker lost" and row["finished_at"] is not None

    with pytest.raises(ValueError), get_engine(db.url).begin() as conn:
        run_state.renew(conn, run_id=dead, task_id=TASK, lease_until=utcnow(), status="queued")


def test_guards_refuse_a_live_claim_of_another_task(db: Db) -> None:
    live = utcnow() + timedelta(minutes=5)
    run_id = db.new_run(run_state.RUNNING, lease_expires_at=live)
    before = db.row(run_id)
    with get_engine(db.url).begin() as conn:
        assert not run_state.claim(
            conn, run_id=run_id, task_id="other", worker_id="w", lease_seconds=60, max_attempts=3
        )
        assert not run_state.succeed(
            conn, run_id=run_id, task_id="other", head_key="h", report_head={}
        )
        assert not run_state.fail(conn, run_id=run_id, code="x", message="m", task_id="other")
        assert not run_state.release(conn, run_id=run_id, task_id="other")
        assert not run_state.requeue_lost(conn, run_id=run_id, max_attempts=3, now=utcnow())
        assert not run_state.renew(conn, run_id=run_id, task_id="other", lease_until=live)
        assert run_state.renew(conn, run_id=run_id, task_id=TASK, lease_until=live, progress=0.5)
    assert db.row(run_id) == {**before, "progress": 0.5}
    with get_engine(db.url).begin() as conn:  # out of attempts: not claimable, even by its task
        assert not run_state.claim(
            conn, run_id=run_id, task_id=TASK, worker_id="w", lease_seconds=60, max_attempts=1
        )


def test_a_stale_workers_late_success_after_recovery_is_refused(db: Db, tmp_path: Path) -> None:
    from backend.recovery import recover
    from worker.execution import _finish, claim_run, fail_run

    settings = make_settings(tmp_path, db.url, max_attempts=MAX_ATTEMPTS)
    run_id = db.new_run(run_state.QUEUED, task_id=None, worker_id=None, lease_expires_at=None)
    assert claim_run(settings, run_id, "A")
    with session_scope(db.url) as session:  # A stops renewing its lease: it expires
        run = session.get(Run, run_id)
        assert run is not None
        run.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert run_id in recover(settings, None)["resent"]
    assert db.row(run_id)["status"] == "queued"

    head = {"schema": "genscope.report/1", "settings": {"head_key": "k" * 64}}
    result = {
        "position": 0,
        "measure_id": "margin.output",
        "data": {"value": 1.0, "status": "ok"},
        "blob": "b" * 64,
        "cache_key": "c" * 64,
        "cached_from": None,
    }
    queued = db.row(run_id)
    assert _finish(settings, run_id, "A", head, [result]) == "lost"  # A comes back, too late
    assert db.row(run_id) == queued
    fail_run(settings, run_id, "A", "analysis_failed", "A's late failure")
    assert db.row(run_id) == queued

    assert claim_run(settings, run_id, "B")  # B takes it; A is still refused
    running = db.row(run_id)
    assert _finish(settings, run_id, "A", head, [result]) == "lost"
    assert db.row(run_id) == running
    with session_scope(db.url) as session:
        rows = session.scalars(select(MeasureResultRow).where(MeasureResultRow.run_id == run_id))
        assert list(rows) == []  # nothing of A's was written
    assert _finish(settings, run_id, "B", head, [result]) == "succeeded"
    assert db.row(run_id)["status"] == "succeeded"


# --- no status written outside backend.run_state -----------------------------------------------

SCANNED = ("backend", "worker", "frontend", "genscope", "bench")
OWNER = Path("backend/run_state.py")


def _chain_has_update_of_run(node: ast.AST) -> bool:
    """Whether a ``.values(...)`` call hangs on ``update(Run)``."""
    while isinstance(node, (ast.Call, ast.Attribute)):
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Name)
                and func.id == "update"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "Run"
            ):
                return True
            node = func
        else:
            node = node.value
    return False


def _is_run_state_constant(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "run_state"
    )


def status_writes(source: str) -> list[tuple[int, str]]:
    """The places in ``source`` that write a run's status other than through ``run_state``."""
    statuses = set(run_state.STATUSES)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and isinstance(value, ast.Constant)
                    and value.value in statuses
                ):
                    found.append((node.lineno, f"status = {value.value!r}"))
        elif isinstance(node, ast.Call):
            func = node.func
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(func, ast.Name) and func.id == "setattr":
                args = node.args
                if (
                    len(args) >= 2
                    and isinstance(args[1], ast.Constant)
                    and args[1].value == "status"
                ):
                    found.append((node.lineno, "setattr(..., 'status', ...)"))
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if (
                name == "Run"
                and "status" in keywords
                and not _is_run_state_constant(keywords["status"])
            ):
                found.append((node.lineno, "Run(status=...) not from run_state"))
            if name == "values":
                dicts = [a for a in node.args if isinstance(a, ast.Dict)]
                keys = {k.value for d in dicts for k in d.keys if isinstance(k, ast.Constant)}
                if "status" in keywords or "status" in keys:
                    literal = keywords.get("status")
                    if _chain_has_update_of_run(func.value) or (
                        isinstance(literal, ast.Constant) and literal.value in statuses
                    ):
                        found.append((node.lineno, "UPDATE ... SET status"))
    return found


def test_the_checker_finds_status_writes() -> None:
    source = (
        "run.status = 'failed'\n"
        "setattr(run, 'status', x)\n"
        "Run(status='queued')\n"
        "update(Run).where(Run.id == i).values(status=s)\n"
        "update(Run).values({'status': 'running'})\n"
        "stmt.values(status='succeeded')\n"
        "Run(status=run_state.INITIAL)\n"
        "MeasureResult(status='failed')\n"
        "update(Run).values(enqueued_at=now)\n"
        "if run.status == 'failed': pass\n"
    )
    assert [line for line, _ in status_writes(source)] == [1, 2, 3, 4, 5, 6]


def test_no_module_outside_run_state_writes_a_run_status() -> None:
    offenders = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel == OWNER or "alembic" in rel.parts:
                continue
            offenders += [(str(rel), *w) for w in status_writes(path.read_text())]
    assert offenders == []
