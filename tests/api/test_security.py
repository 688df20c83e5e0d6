"""The security audit of the service, one test per property (SQLite and PostgreSQL).

Authentication and isolation, share links, response headers and CORS, hostile names and titles,
HTML escaping, secrets in logs and where uploads live. Each test states the defence it proves.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from backend import crud
from backend.core import security
from backend.core.db import get_engine, session_scope
from backend.core.security import hash_token, new_token
from backend.models import ApiToken
from tests.conftest import (
    MOONS_MLP,
    make_settings,
    mlp_state,
    safetensors_bytes,
    upload_checkpoint,
)

XSS_NAMES = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
HOSTILE_NAMES = (
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "\u202egnp.exe",  # right-to-left override
    "naïve 模型 😀🔥",
    *XSS_NAMES,
)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43,}$")  # url-safe base64 of >= 32 random bytes
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Routes that need no token by design: the share views (the token is in the path), the health
# probe (liveness checks of orchestrators; it shows no user data) and the zoo's catalogue.
PUBLIC_PREFIXES = ("/api/share/", "/ui/share/", "/api/health", "/ui/architectures")


def _npz(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(20, 2)).astype(np.float32),
        y_train=rng.integers(0, 2, 20),
    )
    return buf.getvalue()


def _new_user(settings: Any, name: str) -> tuple[dict[str, str], str]:
    with session_scope(settings.sqlalchemy_url) as session:
        _user, token = crud.create_user(session, name=f"{name}-{secrets.token_hex(4)}")
    return {"Authorization": f"Bearer {token}"}, token


def _token_of(share_url: str) -> str:
    return share_url.rsplit("/", 1)[-1]


class World:
    """Two users on an auth-on app; alice owns one of everything."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.settings = client.settings
        self.alice, self.alice_token = _new_user(self.settings, "alice")
        self.bob, self.bob_token = _new_user(self.settings, "bob")
        seed = secrets.randbelow(10**6)
        ckpt = upload_checkpoint(
            client, safetensors_bytes(mlp_state(seed=seed)), headers=self.alice
        )
        assert ckpt.status_code == 201, ckpt.text
        self.checkpoint_id = ckpt.json()["id"]
        dataset = client.post(
            "/api/datasets",
            files={"file": ("toy.npz", io.BytesIO(_npz(seed)))},
            headers=self.alice,
        )
        assert dataset.status_code == 201, dataset.text
        self.dataset_id = dataset.json()["id"]
        run = client.post(
            "/api/runs",
            json={"checkpoint_id": self.checkpoint_id, "dataset": "moons"},
            headers=self.alice,
        )
        assert run.status_code == 202, run.text
        self.run_id = run.json()["id"]
        comparison = client.post(
            "/api/comparisons", json={"run_ids": [self.run_id], "title": "mine"}, headers=self.alice
        )
        assert comparison.status_code == 201, comparison.text
        self.comparison_id = comparison.json()["id"]
        self.share_token = _token_of(comparison.json()["share_url"])

    def ids(self) -> dict[str, str]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "dataset_id": self.dataset_id,
            "run_id": self.run_id,
            "comparison_id": self.comparison_id,
            "token": self.share_token,
        }


@pytest.fixture(scope="module")
def world(data_dir: Path, db_url: str) -> Iterator[World]:
    """One auth-on app per database for the module (tests that revoke make their own)."""
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.main import create_app

    settings = make_settings(data_dir, db_url, auth="tokens")
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as client:
        client.settings = settings  # type: ignore[attr-defined]
        yield World(client)


def _flat_routes(app: Any) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, including those of included routers (recent FastAPI
    keeps them behind an included-router node of ``app.routes``)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for context in contexts():
                yield context.path, set(getattr(context.original_route, "methods", None) or ())
        else:
            yield getattr(route, "path", ""), set(getattr(route, "methods", None) or ())


def _routes(app: Any) -> Iterator[tuple[str, str]]:
    """Every (method, path template) of the app's API and dashboard data routes."""
    for path, methods in _flat_routes(app):
        if path.startswith(("/api", "/ui")):
            for method in sorted(methods - {"HEAD", "OPTIONS"}):
                yield method, path


def _fill(path: str, ids: dict[str, str], default: str = "0" * 32) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), default), path)


def _call(client: Any, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, path, **kwargs)


# --------------------------------------------------------------------------- authentication


def test_every_route_needs_a_valid_token(world: World) -> None:
    """Auth on: every ``/api`` (and dashboard data) route but the share views answers 401 with
    the one error body to a missing, malformed, wrong or revoked token."""
    client = world.client
    checked = 0
    for method, template in _routes(client.app):
        if template.startswith(PUBLIC_PREFIXES):
            continue
        path = _fill(template, world.ids())
        for headers in (
            {},
            {"Authorization": "Bearer " + new_token()},
            {"Authorization": "Basic " + world.alice_token},
            {"Authorization": world.alice_token},
            {"Authorization": f"Bearer {world.share_token}"},  # a share token is no API token
        ):
            answer = _call(client, method, path, headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            body = answer.json()
            assert body["code"] == "unauthorized" and body["message"], (method, path)
            assert answer.headers["www-authenticate"] == "Bearer"
        checked += 1
    assert checked >= 15
    # a valid token works, and stops working once revoked
    carol, carol_token = _new_user(world.settings, "carol")
    assert client.get("/api/runs", headers=carol).status_code == 200
    with session_scope(world.settings.sqlalchemy_url) as session:
        session.execute(
            ApiToken.__table__.update()
            .where(ApiToken.token_hash == hash_token(carol_token))
            .values(revoked_at=crud.utcnow())
        )
    assert client.get("/api/runs", headers=carol).status_code == 401


def test_other_users_ids_answer_404_everywhere(world: World) -> None:
    """Every id-taking route answers another user's id exactly like an unknown id (404), and
    nothing is changed by trying (bob's DELETE does not revoke alice's link)."""
    client = world.client
    tried = set()
    for method, template in _routes(client.app):
        names = set(re.findall(r"\{(\w+)\}", template))
        if not names or template.startswith(PUBLIC_PREFIXES):
            continue
        path = _fill(template, world.ids())
        answer = _call(client, method, path, world.bob)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["code"] == "not_found"
        unknown = _call(client, method, _fill(template, {}, "f" * 32), world.bob)
        assert unknown.status_code == 404
        assert set(answer.json()) == set(unknown.json())
        tried.add(template)
    assert {
        "/api/checkpoints/{checkpoint_id}",
        "/api/datasets/{dataset_id}",
        "/api/runs/{run_id}",
        "/api/comparisons/{comparison_id}",
        "/api/comparisons/{comparison_id}/share",
        "/api/comparisons/{comparison_id}/study",
        "/ui/runs/{run_id}",
        "/ui/comparisons/{comparison_id}",
    } <= tried
    # ids in bodies: runs on alice's checkpoint or dataset, comparisons of alice's runs
    for body in (
        {"checkpoint_id": world.checkpoint_id, "dataset": "moons"},
        {"checkpoint_id": world.checkpoint_id, "dataset": world.dataset_id},
    ):
        assert client.post("/api/runs", json=body, headers=world.bob).status_code in (404, 422)
    steal = client.post("/api/comparisons", json={"run_ids": [world.run_id]}, headers=world.bob)
    assert steal.status_code == 404
    assert client.get(f"/api/share/{world.share_token}").status_code == 200  # not revoked


def test_api_tokens_are_stored_hashed_and_compared_by_hash(world: World) -> None:
    """Only the sha256 of an API token is stored. A token is checked by looking its hash up
    in a unique index (``crud.get_user_by_token``): the secret itself is never compared byte
    by byte, so response timing says nothing about it; ``same_hash`` is constant-time too."""
    engine = get_engine(world.settings.sqlalchemy_url)
    with engine.connect() as conn:
        rows = [tuple(map(str, r)) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    dump = json.dumps(rows)
    for token in (world.alice_token, world.bob_token):
        assert token not in dump
        assert hash_token(token) in dump
        assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    lookup = inspect.getsource(crud.get_user_by_token)
    assert "ApiToken.token_hash == hash_token(token)" in lookup
    assert "compare_digest" in inspect.getsource(security.same_hash)
    assert ApiToken.__table__.c.token_hash.unique


# --------------------------------------------------------------------------- share links


def test_share_tokens_are_random_unique_and_stored_hashed(world: World) -> None:
    """Share tokens carry 256 random bits (``secrets.token_urlsafe(32)``): >= 43 URL-safe
    characters, never repeated; only their sha256 is stored."""
    assert security.TOKEN_BYTES * 8 >= 128
    many = {new_token() for _ in range(5000)}
    assert len(many) == 5000 and all(TOKEN_RE.match(t) for t in many)
    client = world.client
    tokens = [world.share_token]
    for _ in range(15):
        answer = client.post(
            f"/api/comparisons/{world.comparison_id}/share", json={}, headers=world.alice
        )
        assert answer.status_code == 201
        tokens.append(_token_of(answer.json()["share_url"]))
    assert len(set(tokens)) == len(tokens) and all(TOKEN_RE.match(t) for t in tokens)
    engine = get_engine(world.settings.sqlalchemy_url)
    with engine.connect() as conn:
        dump = json.dumps(
            [tuple(map(str, r)) for r in conn.execute(text("SELECT * FROM share_links"))]
        )
    for token in tokens:
        assert token not in dump and hash_token(token) in dump


def test_share_views_are_read_only(world: World) -> None:
    """No method but GET (and HEAD) exists on the share routes: 405, and nothing changes."""
    client = world.client
    token = world.share_token
    for path in (f"/api/share/{token}", f"/share/{token}", f"/ui/share/{token}"):
        for method in UNSAFE_METHODS:
            answer = client.request(method, path, json={"title": "pwned"})
            assert answer.status_code in (404, 405), (method, path)
        assert client.get(path).status_code == 200
    assert client.get(f"/api/share/{token}").json()["title"] == "mine"


def test_share_links_are_revocable(world: World) -> None:
    """Revoked links answer 404 at once on every share view (API, page and page data)."""
    client = world.client
    made = client.post(
        "/api/comparisons", json={"run_ids": [world.run_id]}, headers=world.alice
    ).json()
    token = _token_of(made["share_url"])
    assert client.get(f"/share/{token}").status_code == 200
    revoke = client.delete(f"/api/comparisons/{made['id']}/share", headers=world.alice)
    assert revoke.status_code == 200 and revoke.json()["revoked"] >= 1
    for path in (f"/api/share/{token}", f"/share/{token}", f"/ui/share/{token}"):
        assert client.get(path).status_code == 404, path


def test_share_tokens_are_scoped_to_one_comparison(world: World) -> None:
    """A share token opens its own comparison and nothing else: not another comparison, not
    a run or comparison of the owner through any authenticated route, not as a bearer token."""
    client = world.client
    other = client.post(
        "/api/comparisons", json={"run_ids": [world.run_id], "title": "other"}, headers=world.alice
    ).json()
    mine = client.get(f"/api/share/{world.share_token}").json()
    theirs = client.get(f"/api/share/{_token_of(other['share_url'])}").json()
    assert mine["id"] == world.comparison_id and theirs["id"] == other["id"]
    assert mine["title"] == "mine"
    bearer = {"Authorization": f"Bearer {world.share_token}"}
    for path in (
        f"/api/comparisons/{world.comparison_id}",
        f"/api/comparisons/{other['id']}",
        f"/api/runs/{world.run_id}",
        f"/api/checkpoints/{world.checkpoint_id}",
        f"/ui/runs/{world.run_id}",
        f"/ui/comparisons/{world.comparison_id}",
        "/api/runs",
        "/api/comparisons",
    ):
        assert client.get(path, headers=bearer).status_code == 401, path
    # the token is not an id either
    assert (
        client.get(f"/api/comparisons/{world.share_token}", headers=world.alice).status_code == 404
    )
    assert client.get(f"/api/share/{world.comparison_id}").status_code == 404
    # the read-only page data carries no owner ids
    data = client.get(f"/ui/share/{world.share_token}").json()
    assert data["comparison"]["id"] is None and all(r["id"] is None for r in data["runs"])


def test_share_tokens_cannot_be_enumerated(world: World) -> None:
    """No route lists share tokens: unauthenticated listings are 401; the owner's reads show
    ``share_url`` only in the answer that created the link (the server keeps only hashes)."""
    client = world.client
    for path in ("/api/comparisons", f"/api/comparisons/{world.comparison_id}", "/ui/runs"):
        assert client.get(path).status_code == 401
    seen = [
        client.get("/api/comparisons", headers=world.alice).text,
        client.get(f"/api/comparisons/{world.comparison_id}", headers=world.alice).text,
        client.get(f"/ui/comparisons/{world.comparison_id}", headers=world.alice).text,
        client.get(f"/api/runs/{world.run_id}", headers=world.alice).text,
        client.get("/ui/runs", headers=world.alice).text,
        client.get("/openapi.json").text,
    ]
    assert not any(world.share_token in page for page in seen)
    listed = client.get("/api/comparisons", headers=world.alice).json()["data"]
    assert all(c["share_url"] is None for c in listed)


# --------------------------------------------------------------------------- headers and CORS


def _csp(answer: Any) -> dict[str, str]:
    policy = answer.headers["content-security-policy"]
    parts = [p.strip().split(None, 1) for p in policy.split(";") if p.strip()]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


def test_html_pages_send_a_strict_csp_and_security_headers(world: World) -> None:
    """Pages allow only the app's own scripts (no inline script, no eval), forbid framing,
    sniffing and cross-site referrers."""
    client = world.client
    pages = ["/", f"/runs/{world.run_id}", f"/compare/{world.comparison_id}"]
    pages += [f"/share/{world.share_token}", "/share/" + new_token()]  # 200 and 404
    for path in pages:
        answer = client.get(path)
        assert answer.headers["content-type"].startswith("text/html"), path
        csp = _csp(answer)
        script = csp.get("script-src", csp.get("default-src", ""))
        assert script.split() == ["'self'"], (path, script)
        assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] in ("same-origin", "no-referrer")
    assert client.get(f"/share/{world.share_token}").headers["referrer-policy"] == "no-referrer"


def test_json_and_static_answers_send_security_headers(world: World) -> None:
    """API answers (success and error) and static files: nosniff, no framing, and a CSP that
    lets a JSON document load nothing."""
    client = world.client
    for answer in (
        client.get("/api/runs", headers=world.alice),
        client.get("/api/runs"),
        client.get(f"/api/share/{world.share_token}"),
        client.get("/api/health"),
        client.get("/ui/runs", headers=world.alice),
        client.get("/static/app.js"),
        client.get("/openapi.json"),
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "referrer-policy" in answer.headers
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert _csp(client.get("/api/runs"))["default-src"] == "'none'"


def test_cors_is_off(world: World) -> None:
    """No ``Access-Control-Allow-*`` header for another origin; preflights are not allowed."""
    client = world.client
    origin = {"Origin": "https://evil.example"}
    for path in ("/api/health", f"/api/share/{world.share_token}", "/api/runs"):
        answer = client.get(path, headers={**origin, **world.alice})
        assert not any(h.startswith("access-control-") for h in answer.headers), path
        preflight = client.options(
            path,
            headers={
                **origin,
                "Access-Control-Request-Method": "DELETE",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code in (404, 405), path
        assert not any(h.startswith("access-control-") for h in preflight.headers)


# --------------------------------------------------------------------------- rendered HTML


class _Scan(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block (or what it could not)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.in_script: str | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        names = dict(attrs)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"event handler attribute {name} on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL in {name} of <{tag}>")
        if tag == "script":
            kind = (names.get("type") or "").lower()
            self.in_script = "data" if kind == "application/json" else "code"
            if self.in_script == "code" and not names.get("src"):
                self.problems.append("inline <script> without src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = None

    def handle_data(self, data: str) -> None:
        if self.in_script == "code" and data.strip():
            self.problems.append(f"inline script body: {data[:60]!r}")


def _scan(html: str) -> _Scan:
    scan = _Scan()
    scan.feed(html)
    scan.close()
    return scan


def _payload_with(names: tuple[str, ...]) -> dict[str, Any]:
    from frontend import pages
    from tests.frontend.samples import named_runs

    runs = [
        {"id": r["id"], "checkpoint_name": name, "status": "succeeded", "report": r["report"]}
        for r, name in zip(named_runs(len(names)), names, strict=True)
    ]
    return pages.comparison_data({"id": "c1", "title": names[0]}, runs)


@pytest.mark.parametrize("evil", XSS_NAMES)
def test_rendered_pages_have_no_inline_script_and_escape_names(evil: str) -> None:
    """Every page template rendered with hostile text: no inline script, no ``on*=``
    attribute, and the text appears only escaped (a JSON data block cannot be closed)."""
    from frontend import pages

    rendered = {
        "dashboard": pages.render_dashboard(),
        "run": pages.render_run_page(evil),
        "compare": pages.render_compare_page(evil),
        "share": pages.render_share_page(_payload_with((evil, evil + "2", "plain"))),
        "not found": pages.render_not_found(evil, evil),
        "not found (share)": pages.render_not_found(evil, evil, readonly=True),
    }
    for name, html in rendered.items():
        scan = _scan(html)
        assert not scan.problems, (name, scan.problems)
        assert evil not in html, name
        assert "img" not in scan.tags, name  # the payload never became markup
    share = rendered["share"]
    block = re.search(
        r'<script type="application/json" id="embedded-data">(.*?)</script>', share, re.S
    )
    assert block is not None and "</" not in block.group(1)
    assert json.loads(block.group(1))["title"] == evil


def test_templates_and_script_insert_text_only() -> None:
    """No template has an inline handler or script; ``app.js`` never parses strings as HTML
    (no innerHTML/outerHTML/insertAdjacentHTML/document.write/eval): user text goes in through
    text nodes (``textContent``/``createTextNode``)."""
    root = Path(__file__).resolve().parents[2] / "frontend"
    for template in (root / "templates").glob("*.html"):
        source = template.read_text()
        assert not re.search(r"\son\w+\s*=", source), template.name
        assert not re.search(r"<script>(?!\s*</script>)", source), template.name
    js = (root / "static" / "app.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in js, sink
    assert "textContent" in js and "createTextNode" in js


# --------------------------------------------------------------------------- hostile names


def _blob_files(settings: Any) -> list[Path]:
    return [p for p in (settings.blob_dir / "objects").rglob("*") if p.is_file()]


def _raw_multipart(filename: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart body with ``filename`` exactly as given (test clients percent-encode some
    characters of it; a hostile client does not)."""
    boundary = "gs-" + secrets.token_hex(8)
    head = b""
    for name, value in fields.items():
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post_raw(client: Any, path: str, filename: str, data: bytes, fields: dict[str, str]) -> Any:
    body, content_type = _raw_multipart(filename, data, fields)
    return client.post(path, content=body, headers={"Content-Type": content_type})


def test_hostile_upload_names_are_kept_verbatim_never_used_as_paths(client: Any) -> None:
    """Names from the multipart filename or the ``name`` field are stored and answered
    verbatim; the file itself is stored under its sha256 only, so no name reaches the
    filesystem. NUL characters or names longer than the column answer 422: never a 500."""
    settings = client.settings
    arch = {"arch": "mlp", "arch_config": json.dumps(MOONS_MLP)}
    for i, name in enumerate(HOSTILE_NAMES):
        data = safetensors_bytes(mlp_state(seed=1000 + i + secrets.randbelow(10**6)))
        if i % 2 == 0:  # in the filename (raw bytes), else in the name field
            answer = _post_raw(client, "/api/checkpoints", name, data, arch)
        else:
            answer = _post_raw(
                client, "/api/checkpoints", "w.safetensors", data, {**arch, "name": name}
            )
        assert answer.status_code == 201, (name, answer.text)
        body = answer.json()
        assert body["name"] == name
        sha = hashlib.sha256(data).hexdigest()
        assert body["sha256"] == sha
        stored = settings.blob_dir / "objects" / sha[:2] / sha
        assert stored.is_file() and stored.read_bytes() == data
        assert client.get(f"/api/checkpoints/{body['id']}").json()["name"] == name
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.name) for p in _blob_files(settings))
    assert not any("passwd" in p.name or "win.ini" in p.name for p in settings.data_dir.rglob("*"))
    # refused before anything is inspected or stored; no temporary file is left behind
    data = safetensors_bytes(mlp_state(seed=7))
    for filename, fields in (
        ("evil\x00.pt", arch),
        ("w.pt", {**arch, "name": "a\x00b"}),
        ("w.pt", {**arch, "name": "x" * 10_000}),
        ("x" * 300, arch),
        ("w.pt", {**arch, "arch": "ml\x00p"}),
    ):
        answer = _post_raw(client, "/api/checkpoints", filename, data, fields)
        assert answer.status_code == 422, (filename[:20], answer.text)
        assert answer.json()["code"] == "validation_error"
    answer = _post_raw(client, "/api/checkpoints", "x" * 10_000, data, arch)
    # a part header past the parser's bounds: 413 like every other bound of the form
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "payload_too_large"
    for filename, fields in (("d.npz", {"name": "a\x00"}), ("d\x00.npz", {})):
        dataset = _post_raw(client, "/api/datasets", filename, _npz(3), fields)
        assert dataset.status_code == 422 and dataset.json()["code"] == "validation_error"
    assert not list((settings.blob_dir / "tmp").iterdir())


def test_hostile_comparison_titles(client: Any) -> None:
    """Titles are kept verbatim (markup, RTL marks, emoji, ``../``); NUL or more than 255
    characters answer 422; the share page shows them escaped."""
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=4242))).json()["id"]
    run = client.post("/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons"}).json()["id"]
    for title in HOSTILE_NAMES:
        made = client.post("/api/comparisons", json={"run_ids": [run], "title": title})
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["title"] == title
        assert client.get(f"/api/comparisons/{body['id']}").json()["title"] == title
        token = _token_of(body["share_url"])
        assert client.get(f"/api/share/{token}").json()["title"] == title
        page = client.get(f"/share/{token}")
        assert page.status_code == 200
        scan = _scan(page.text)
        assert not scan.problems
        if "<" in title:
            assert title not in page.text and "img" not in scan.tags
        assert client.get(f"/ui/share/{token}").json()["title"] == title
    for bad in ("a\x00b", "x" * 10_000):
        answer = client.post("/api/comparisons", json={"run_ids": [run], "title": bad})
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "evil",
    ["a\x00b", "%00", "x" * 10_000, "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "\u202e😀"],
)
def test_hostile_ids_in_paths_and_bodies_are_404_or_422(client: Any, evil: str) -> None:
    """Ids that cannot exist (NUL, over-long, path-like, non-ASCII) are answered 404/422 without
    reaching the database (PostgreSQL refused NUL in a parameter: that was a 500)."""
    from urllib.parse import quote

    quoted = quote(evil, safe="")
    for template in (
        "/api/checkpoints/{}",
        "/api/datasets/{}",
        "/api/runs/{}",
        "/api/comparisons/{}",
        "/api/comparisons/{}/study",
        "/api/share/{}",
        "/ui/runs/{}",
        "/ui/comparisons/{}",
        "/ui/share/{}",
        "/share/{}",
    ):
        answer = client.get(template.format(quoted))
        assert answer.status_code in (404, 422), (template, answer.status_code)
    for method in ("POST", "DELETE"):
        answer = client.request(method, f"/api/comparisons/{quoted}/share")
        assert answer.status_code in (404, 422)
    for page in (f"/runs/{quoted}", f"/compare/{quoted}"):
        answer = client.get(page)
        assert answer.status_code in (200, 404) and not _scan(answer.text).problems
    for body in (
        {"checkpoint_id": evil, "dataset": "moons"},
        {"checkpoint_id": "0" * 32, "dataset": evil},
        {"run_ids": [evil]},
        {"run_ids": [{"nested": evil}]},
        {"checkpoint_id": 12345678901234567890, "dataset": "moons"},
    ):
        path = "/api/comparisons" if "run_ids" in body else "/api/runs"
        answer = client.post(path, json=body)
        assert answer.status_code in (404, 422), (body.keys(), answer.text)


def test_fuzz_regressions(client: Any) -> None:
    """The exact inputs schemathesis (and the PostgreSQL probe) turned into 500s, now 4xx."""
    assert client.get("/api/checkpoints", params={"offset": 2**63}).status_code == 422
    assert client.get("/api/comparisons", params={"offset": 9223372036854775808}).status_code == 422
    assert client.get("/api/runs", params={"offset": 2**70, "limit": 1}).status_code == 422
    assert client.get("/ui/runs", params={"offset": 2**64}).status_code == 422
    assert client.get("/ui/runs", params={"status": "a\x00"}).status_code == 422
    # bodies that are not UTF-8 JSON: 400, documented on the routes
    for path in ("/api/runs", "/api/comparisons"):
        answer = client.post(
            path, content=b"\xff\xfe\x00G", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code in (400, 422) and answer.json()["code"]
    spec = client.get("/openapi.json").json()["paths"]
    assert "400" in spec["/api/runs"]["post"]["responses"]
    assert "400" in spec["/api/comparisons"]["post"]["responses"]
    assert "400" in spec["/api/comparisons/{comparison_id}/share"]["post"]["responses"]
    # options that overflow the engine's integers
    ckpt = upload_checkpoint(client, safetensors_bytes(mlp_state(seed=31337))).json()["id"]
    for options in ({"seed": 2**80}, {"seed": -1}, {"hessian_samples": 2**40}):
        answer = client.post(
            "/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", "options": options}
        )
        assert answer.status_code == 422, options
    # NUL in an upload's architecture name (a subprocess argument): 422, not 500
    answer = client.post(
        "/api/checkpoints",
        files={"file": ("w.safetensors", io.BytesIO(safetensors_bytes(mlp_state(seed=8))))},
        data={"arch": "ml\x00p"},
    )
    assert answer.status_code == 422


# --------------------------------------------------------------------------- logs and storage


def test_no_tokens_in_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Requests with a bearer token and a share token, every logger at DEBUG: neither token is
    written. The access-log line of a share URL (uvicorn's format, path third) is redacted by
    the filter the app installs on ``uvicorn.access``; so is the path of a 500 on a share route."""
    from fastapi.testclient import TestClient

    client = world.client
    caplog.set_level(logging.DEBUG)
    client.get("/api/runs", headers=world.alice)
    client.get(f"/api/runs/{world.run_id}", headers=world.alice)
    client.get("/api/runs", headers={"Authorization": "Bearer " + world.bob_token + "x"})
    for path in (f"/api/share/{world.share_token}", f"/share/{world.share_token}"):
        client.get(path)
        client.get(f"{path}?q=1")
    access = logging.getLogger("uvicorn.access")
    access.info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/share/{world.share_token}", "1.1", 200
    )
    access.info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5",
        "GET",
        f"/ui/share/{world.share_token}",
        "1.1",
        200,
    )
    # an unexpected error on a share route logs its path: redacted
    app = client.app

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    original = crud.get_comparison_by_share_token
    crud.get_comparison_by_share_token = boom  # type: ignore[assignment]
    try:
        with TestClient(app, raise_server_exceptions=False) as raw:
            assert raw.get(f"/api/share/{world.share_token}").status_code == 500
    finally:
        crud.get_comparison_by_share_token = original  # type: ignore[assignment]
    # the test client (httpx) logs the URLs it requests: that is the caller's log, not ours
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in ours)
    for secret in (world.alice_token, world.bob_token, world.share_token):
        assert secret not in logged
    assert "/share/[redacted]" in logged


def test_real_server_access_log_redacts_share_tokens(world: World, tmp_path: Path) -> None:
    """The app under uvicorn itself: the access log shows the share path with the token cut."""
    import httpx
    import uvicorn

    from backend.core.config import get_settings
    from backend.main import create_app

    app = create_app()
    app.dependency_overrides[get_settings] = lambda: world.settings
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=True)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/share/{world.share_token}").status_code == 200
        assert httpx.get(f"{base}/share/{world.share_token}").status_code == 200
        assert httpx.get(f"{base}/api/runs", headers=world.alice).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
        access.removeHandler(handler)
    out = stream.getvalue()
    assert "/api/share/[redacted]" in out and "/share/[redacted]" in out
    assert world.share_token not in out and world.alice_token not in out


def test_uploads_live_outside_every_served_directory(client: Any) -> None:
    """No static mount maps the data directory, and path tricks on ``/static`` do not reach
    a blob (uploads are content-addressed files under the data directory only)."""
    from starlette.routing import Mount

    data = safetensors_bytes(mlp_state(seed=999))
    sha = upload_checkpoint(client, data).json()["sha256"]
    data_dir = Path(client.settings.data_dir).resolve()
    for route in client.app.routes:
        if isinstance(route, Mount):
            directory = Path(getattr(route.app, "directory", "") or "/nonexistent").resolve()
            assert not directory.is_relative_to(data_dir) and not data_dir.is_relative_to(
                directory
            ), route.path
    blob = client.settings.blob_dir / "objects" / sha[:2] / sha
    relative = blob.relative_to(data_dir)
    up = "../" * 12
    for path in (
        f"/static/{up}{blob}",
        f"/static/%2e%2e/%2e%2e/{relative}",
        f"/static/..%2f..%2f{relative}",
        f"/static/{relative}",
        f"/{relative}",
        f"/blobs/objects/{sha[:2]}/{sha}",
        f"/static/....//....//{relative}",
    ):
        answer = client.get(path)
        assert answer.status_code in (400, 404, 405), path
        assert answer.content != data
