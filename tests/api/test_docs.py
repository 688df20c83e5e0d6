"""``/docs`` serves Swagger UI from the installed bundle: nothing from another origin, no inline
script, a strict CSP; ``/redoc`` (no packaged bundle) is not served."""

from __future__ import annotations

import re
from typing import Any


def test_docs_page_loads_nothing_from_elsewhere(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    html = page.text
    assert not re.search(r"https?://", html), "an absolute URL on the docs page"
    assert "<script>" not in html  # no inline script: every script has a src on this origin
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/docs/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert "SwaggerUIBundle" in client.get("/docs/init.js").text


def test_only_the_bundles_listed_files_are_served(client: Any) -> None:
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2F..%2F__init__.py").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200
