"""``/docs``: the interactive API reference (Swagger UI) served from an installed package.

FastAPI's default page loads Swagger UI from a CDN at a floating version, with an inline script,
on the origin whose storage holds the API token. Here the page, its start-up script and the
Swagger UI 5 bundle (shipped in the ``fastapi-offline`` package; version 5 reads the OpenAPI 3.1
documents FastAPI writes) all come from this service, so the page runs no script from elsewhere
and no inline script at all (``DOCS_CSP`` in :mod:`backend.core.security`). ``/redoc`` is not
served: one interactive reference is enough, and ReDoc's page needs a looser policy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from backend.core.errors import NotFound

router = APIRouter(include_in_schema=False)

#: The only files of the bundle that are served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}

_INIT_JS = """\
(function () {
  "use strict";
  // the dashboard's CSRF token and the saved API token go with "Try it out" requests
  var meta = document.querySelector('meta[name="csrf-token"]');
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: function (req) {
      if (meta && meta.content) req.headers["X-CSRF-Token"] = meta.content;
      var token = null;
      try { token = window.localStorage.getItem("genscope.token"); } catch (e) { token = null; }
      if (token && !req.headers.Authorization) req.headers.Authorization = "Bearer " + token;
      return req;
    }
  });
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>GenScope API</title>
  {csrf}
  <link rel="icon" href="/docs/assets/favicon.png">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""


def bundle_dir() -> Path:
    """The installed Swagger UI release."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs", response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    """The Swagger UI page (no inline script, nothing from another origin)."""
    from backend.core.exposure import app_settings, csrf_token

    token = csrf_token(app_settings(request.app))
    meta = f'<meta name="csrf-token" content="{token}">'
    return HTMLResponse(_PAGE.format(csrf=meta), headers={"Cache-Control": "no-store"})


@router.get("/docs/init.js")
def docs_init() -> Response:
    """The page's start-up script."""
    return Response(_INIT_JS, media_type="text/javascript")


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    """One file of the Swagger UI bundle (:data:`ASSETS` only)."""
    if name not in ASSETS:
        raise NotFound("docs asset", name)
    return FileResponse(
        bundle_dir() / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
