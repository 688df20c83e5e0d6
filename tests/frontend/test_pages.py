"""The dashboard's routes and page rendering: shells, plotly.js, share pages, escaping."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frontend import pages
from tests.frontend.samples import named_runs

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _publics(k: int = 3) -> list[dict[str, Any]]:
    return [
        {"id": r["id"], "checkpoint_name": r["name"], "status": "succeeded", "report": r["report"]}
        for r in named_runs(k)
    ]


def test_share_page_escapes_title_and_embeds_safe_json() -> None:
    runs = _publics()
    runs[0]["checkpoint_name"] = XSS
    payload = pages.comparison_data({"id": "c1", "title": XSS}, runs)
    html = pages.render_share_page(payload)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html  # the <h1>, escaped
    # the embedded JSON cannot close its <script> element
    embedded = re.search(
        r'<script type="application/json" id="embedded-data">(.*?)</script>', html, re.S
    )
    assert embedded is not None
    data = json.loads(embedded.group(1))
    assert data["title"] == XSS and data["runs"][0]["name"] == XSS
    assert '<meta name="robots" content="noindex, nofollow">' in html
    assert '<meta name="referrer" content="no-referrer">' in html
    assert 'href="/runs/' not in html  # read-only: no way into the owner's pages


def test_display_names_are_unique() -> None:
    runs = [
        {"id": "aaaaaaaa1", "checkpoint_name": "model.pt"},
        {"id": "bbbbbbbb2", "checkpoint_name": "model.pt"},
        {"id": "c3", "checkpoint_name": "other.pt"},
    ]
    assert pages.display_names(runs) == ["model.pt (aaaaaa)", "model.pt (bbbbbb)", "other.pt"]


def test_run_row_from_public_run_and_scalars() -> None:
    report = named_runs(1)[0]["report"]
    head = {k: v for k, v in report.items() if k != "measures"}
    row = pages.run_row(
        {"id": "r1", "checkpoint_name": "net", "status": "succeeded", "report_head": head},
        {"hessian.top_eigenvalues": 12.0, "bound.spectral": 3.0, "margin.output": 1.0},
    )
    assert row["name"] == "net" and row["model"] == "mlp"
    assert row["test_accuracy"] == report["metrics"]["test_accuracy"]
    assert row["scalars"]["hessian.top_eigenvalues"] == 12.0
    assert row["scalars"]["bound.spectral"] == 3.0
    assert "margin.output" not in row["scalars"]  # not a headline column
    failed = pages.run_row({"id": "r2", "status": "failed", "report_head": None}, None)
    assert failed["test_accuracy"] is None and failed["scalars"]["margin.all_layer"] is None


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The service's app (API + dashboard) on a fresh SQLite data directory."""
    testclient = pytest.importorskip("fastapi.testclient")
    try:
        from backend.core.config import Settings, get_settings
        from backend.main import create_app
    except ImportError as exc:  # pragma: no cover - the dashboard without the service
        pytest.skip(f"the service is not importable: {exc}")
    data_dir: Path = tmp_path_factory.mktemp("gs-pages")
    app = create_app()
    settings = Settings(data_dir=data_dir, auth="off", allowed_hosts="testserver")
    app.dependency_overrides[get_settings] = lambda: settings
    with testclient.TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/runs/abc", "/compare/abc"])
def test_html_shells_render_with_security_headers(client: Any, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "/static/app.js?v=" in answer.text
    assert "<script>" not in answer.text  # no inline scripts (the CSP forbids them)


def test_plotly_js_served_from_the_package_with_caching(client: Any) -> None:
    import plotly

    answer = client.get(pages.PLOTLY_JS_PATH, headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert "immutable" in answer.headers["cache-control"]
    assert len(answer.content) > 1_000_000  # decoded by the client
    etag = answer.headers["etag"]
    again = client.get(pages.PLOTLY_JS_PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304
    raw = client.get(pages.PLOTLY_JS_PATH, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)  # plain bytes
    page = client.get("/runs/abc").text
    assert f"{pages.PLOTLY_JS_PATH}?v={plotly.__version__}" in page


def test_static_files_and_run_data(client: Any) -> None:
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    runs = client.get("/ui/runs")
    assert runs.status_code == 200
    assert runs.json() == {"data": [], "count": 0, "offset": 0, "limit": pages.RUNS_PAGE}
    missing = client.get("/ui/runs/nope")
    assert missing.status_code == 404


def test_unknown_share_link_is_404_noindex(client: Any) -> None:
    page = client.get("/share/not-a-token")
    assert page.status_code == 404
    assert page.headers["x-robots-tag"] == "noindex, nofollow"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "revoked" in page.text
    data = client.get("/ui/share/not-a-token")
    assert data.status_code == 404 and data.json()["code"] == "not_found"


def test_architecture_catalogue_comes_from_the_zoo(client: Any) -> None:
    """``describe_architectures()`` run in a child process (the zoo imports torch)."""
    answer = client.get("/ui/architectures")
    assert answer.status_code == 200
    archs = {a["name"]: a for a in answer.json()["data"]}
    assert "mlp" in archs
    assert {"name", "type", "default"} <= set(archs["mlp"]["fields"][0])


def test_data_routes_need_a_token_when_auth_is_on(tmp_path: Path) -> None:
    """With ``GENSCOPE_AUTH=tokens`` the page shells stay public (they hold no data) while
    their JSON needs the bearer token the page keeps in localStorage."""
    testclient = pytest.importorskip("fastapi.testclient")
    try:
        from backend import crud
        from backend.core.config import Settings, get_settings
        from backend.core.db import session_scope
        from backend.main import create_app
    except ImportError as exc:  # pragma: no cover - the dashboard without the service
        pytest.skip(f"the service is not importable: {exc}")
    settings = Settings(data_dir=tmp_path, auth="tokens", allowed_hosts="testserver")
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with testclient.TestClient(app) as c:
        with session_scope(settings.sqlalchemy_url) as session:
            _user, token = crud.create_user(session, name="ann")
        assert c.get("/").status_code == 200
        assert c.get("/ui/runs").status_code == 401
        answer = c.get("/ui/runs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["count"] == 0
        assert c.get("/share/unknown").status_code == 404  # no token needed, still 404


def test_the_upload_form_accepts_the_registered_checkpoint_formats() -> None:
    """The file picker and its help come from the engine's format registry, not a copy."""
    from genscope.io.formats import accepted_suffixes, suffix_summary

    page = pages.render_dashboard()
    assert f'accept="{",".join(accepted_suffixes())}"' in page
    assert f'<div id="drop-help" class="muted small">{suffix_summary()}</div>' in page
