"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis 4).

Every operation of ``/openapi.json`` is exercised with generated requests, and every answer must:

* not be a server error (``not_a_server_error``: no 5xx),
* use a documented status code, the documented content type and match the documented body schema
  (``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``).

Generation is derandomized (a fixed seed per operation) and bounded, so CI sees the same requests
every time and the file stays well under a minute and a half on two cores. The main passes run on
SQLite (auth on with a valid bearer token, auth off); a short pass runs on PostgreSQL, which is
stricter about what a text column accepts (NUL bytes) and how large an integer may be.

Besides generated values, path parameters and body ids are also drawn from ids that exist (a
run, a checkpoint, a comparison, a share token), so the 200 answers are checked against their
schemas too, and from :data:`HOSTILE` strings (NUL, 5000 characters, ``../``, markup, RTL
override) that plain generation rarely produces. Uploads run the inspection subprocess (about
2 s each): they get a few positive examples only. ``pytest -s`` prints the statuses seen per
operation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend import crud
from backend.core.config import Settings, get_settings
from backend.core.db import migrate, session_scope
from backend.main import create_app
from tests.conftest import make_settings, mlp_state, safetensors_bytes, upload_checkpoint

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation (and per generation mode); uploads run the inspection subprocess.
EXAMPLES = 20
UPLOAD_EXAMPLES = 3
UPLOAD_PATHS = ("/api/checkpoints", "/api/datasets")


def _fixtures(client: Any, headers: dict[str, str]) -> dict[str, str]:
    """Real ids for the path parameters: one checkpoint, run, comparison and share token."""
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=11)), headers=headers)
    assert ckpt.status_code == 201, ckpt.text
    run = client.post(
        "/api/runs",
        json={"checkpoint_id": ckpt.json()["id"], "dataset": "moons"},
        headers=headers,
    )
    assert run.status_code == 202, run.text
    made = [
        client.post(
            "/api/comparisons",
            json={"run_ids": [run.json()["id"]], "title": title},
            headers=headers,
        )
        for title in ("managed", "shared")
    ]
    assert all(c.status_code == 201 for c in made), [c.text for c in made]
    return {
        "checkpoint_id": ckpt.json()["id"],
        "run_id": run.json()["id"],
        "comparison_id": made[0].json()["id"],  # its links get revoked by the DELETE route
        "dataset_id": "moons",
        "token": made[1].json()["share_url"].rsplit("/", 1)[-1],  # never revoked
    }


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Iterator[Callable[..., tuple[Any, dict[str, str], dict[str, str]]]]:
    """Build an app on a database and answer it, the headers to send and ids that exist."""
    from fastapi.testclient import TestClient

    opened: list[Any] = []

    def build(db_url: str, auth: str) -> tuple[Any, dict[str, str], dict[str, str]]:
        settings: Settings = make_settings(tmp_path / auth, db_url, auth=auth)
        app = create_app()
        app.dependency_overrides[get_settings] = lambda: settings
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        headers: dict[str, str] = {}
        if auth == "tokens":
            migrate(settings.sqlalchemy_url)
            with session_scope(settings.sqlalchemy_url) as session:
                _user, token = crud.create_user(session, name=f"fuzz-{len(opened)}-{id(app)}")
            headers = {"Authorization": f"Bearer {token}"}
        return app, headers, _fixtures(client, headers)

    yield build
    for client in opened:
        client.__exit__(None, None, None)
    schemathesis_asgi.shutdown_lifespans()


def _fill_ids(known: dict[str, str]) -> Callable[[Any], Any]:
    """A case whose JSON body names ids that exist (the rest of the body stays generated)."""

    def fill(case: Any) -> Any:
        if isinstance(case.body, dict):
            body = dict(case.body)
            if "checkpoint_id" in body:
                body["checkpoint_id"] = known["checkpoint_id"]
            if "run_ids" in body:
                body["run_ids"] = [known["run_id"]]
            case.body = body
        return case

    return fill


#: Values schemathesis rarely draws on its own but that broke the service before: NUL (PostgreSQL
#: refuses it in text), over-long, path-like, markup, right-to-left override, a huge number.
HOSTILE = ("a\x00b", "x" * 5000, "../../etc/passwd", "<script>alert(1)</script>", "\u202e😀")


def _hostile(pair: tuple[Any, str]) -> Any:
    """The case with every path parameter and id or title of its JSON body set to ``value``."""
    case, value = pair
    if case.path_parameters:
        case.path_parameters = {name: value for name in case.path_parameters}
    if isinstance(case.body, dict):
        body = dict(case.body)
        for key in ("checkpoint_id", "dataset", "title"):
            if key in body:
                body[key] = value
        if "run_ids" in body:
            body["run_ids"] = [value]
        case.body = body
    return case


def _strategy(operation: Any, known: dict[str, str], mode: Any) -> Any:
    """Generated cases, plus (positive mode) the same with ids that exist, or hostile values,
    in the path and body."""
    strategy = operation.as_strategy(generation_mode=mode)
    if mode != schemathesis.GenerationMode.POSITIVE:
        return strategy
    names = [p.name for p in operation.path_parameters]
    if names and all(n in known for n in names):
        fixed = operation.as_strategy(
            generation_mode=mode, path_parameters={n: known[n] for n in names}
        )
        strategy = st.one_of(strategy, fixed)
    hostile = st.tuples(strategy, st.sampled_from(HOSTILE)).map(_hostile)
    return st.one_of(strategy, strategy.map(_fill_ids(known)), hostile)


def fuzz(app: Any, headers: dict[str, str], known: dict[str, str], scale: float = 1.0) -> int:
    """Run the checks over every operation; answers how many requests were made."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent = [0]
    seen: dict[str, Counter[int]] = {}
    current = {"label": ""}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        upload = operation.path in UPLOAD_PATHS and operation.method.upper() == "POST"
        examples = max(1, int((UPLOAD_EXAMPLES if upload else EXAMPLES) * scale))
        modes = [schemathesis.GenerationMode.POSITIVE]
        if not upload:
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            label = f"{operation.method.upper()} {operation.path} [{mode.name}]"
            current["label"] = label

            @hypothesis.settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=_strategy(operation, known, mode))
            def check(case: Any) -> None:
                sent[0] += 1
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                seen.setdefault(current["label"], Counter())[response.status_code] += 1

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing invalid to generate (e.g. a free-form path string)
            except (Exception, FailureGroup) as exc:  # every operation's failures, once
                failures.append(f"{label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    for label, counter in seen.items():
        print(label, dict(counter))
    return sent[0]


def test_fuzz_sqlite_auth_on(fuzz_app: Any, tmp_path: Path) -> None:
    app, headers, known = fuzz_app(f"sqlite:///{tmp_path / 'on.sqlite'}", "tokens")
    assert fuzz(app, headers, known) > 100


def test_fuzz_sqlite_auth_off(fuzz_app: Any, tmp_path: Path) -> None:
    app, headers, known = fuzz_app(f"sqlite:///{tmp_path / 'off.sqlite'}", "off")
    assert fuzz(app, headers, known, scale=0.6) > 50


def test_fuzz_postgresql(fuzz_app: Any, postgres_url: str) -> None:
    app, headers, known = fuzz_app(postgres_url, "tokens")
    assert fuzz(app, headers, known, scale=0.4) > 30
