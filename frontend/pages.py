"""The dashboard's routes: HTML pages, their JSON data and plotly.js from the installed package.

HTML pages (server-rendered Jinja2 shells, filled by ``static/app.js``, the scripts' shared
core, and each page's own script beside it):

* ``GET /``: runs table (sort, filter, select → Compare) and the upload panel
* ``GET /runs/{run_id}``: one run, live progress, then its figures and tables
* ``GET /compare/{comparison_id}``: the owner's comparison (share / revoke controls)
* ``GET /share/{token}``: the read-only shared comparison; the data is embedded in the page,
  ``noindex`` and ``no-referrer``; 404 once the link is revoked

JSON for those pages (same authentication as the API: the local user with auth off, a bearer
token otherwise; figures are built here, in Python, by :mod:`frontend.figures`):

* ``GET /ui/runs``: the runs table rows with the headline scalars
* ``GET /ui/runs/{run_id}``: status and progress (``?figures=1``: figures and tables too)
* ``GET /ui/runs/{run_id}/report.json``: the report as a download
* ``GET /ui/comparisons/{comparison_id}``: the comparison's figures, scalar table, τ-a
* ``GET /ui/share/{token}``: the same for a share link, without authentication
* ``GET /ui/architectures``: the zoo's architectures and their config fields (for the upload
  form; computed once in a child process, since the zoo imports torch)

``GET /assets/plotly.min.js`` serves plotly.js from the installed ``plotly`` package (no CDN,
no build step), cacheable for a year under a versioned URL.

Nothing here imports torch: the API process must not.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import plotly
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from frontend import figures
from genscope.io.formats import accepted_suffixes, suffix_summary

log = logging.getLogger("genscope.dashboard")

HERE = Path(__file__).parent
PLOTLY_JS_PATH = "/assets/plotly.min.js"
#: Rows per request of the runs table (the page sorts and filters what it loaded).
RUNS_PAGE = 200

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(include_in_schema=False)


# --------------------------------------------------------------------------- rendering


def _static_version() -> str:
    """A short hash of the static files, appended to their URLs so caches refresh on change."""
    h = hashlib.sha256()
    for path in sorted((HERE / "static").glob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:10]


STATIC_VERSION = _static_version()

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # plotly.js injects <style> elements; the figures use SVG traces only (WebGL traces would
    # need 'unsafe-eval' for their shader compiler)
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
}
SHARE_HEADERS = {
    **SECURITY_HEADERS,
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Cache-Control": "no-store",
}


def render(template: str, **context: Any) -> str:
    """Render one template with the shared context (asset URLs, version)."""
    context.setdefault("plotly_js", f"{PLOTLY_JS_PATH}?v={plotly.__version__}")
    context.setdefault("static_version", STATIC_VERSION)
    context.setdefault("readonly", False)
    return _env.get_template(template).render(**context)


def render_dashboard(csrf_token: str = "") -> str:
    """The home page: runs table and upload panel."""
    return render(
        "dashboard.html",
        page="runs",
        title="Runs",
        csrf_token=csrf_token,
        checkpoint_suffixes=suffix_summary(),  # the engine's format registry, not a copy
        checkpoint_accept=",".join(accepted_suffixes()),
    )


def render_run_page(run_id: str, csrf_token: str = "") -> str:
    """The run page shell; ``run.js`` polls its data."""
    return render(
        "run.html", page="run", title=f"Run {run_id}", run_id=run_id, csrf_token=csrf_token
    )


def render_compare_page(comparison_id: str, csrf_token: str = "") -> str:
    """The owner's comparison page shell; ``compare.js`` loads its data."""
    return render(
        "compare.html",
        page="compare",
        title="Comparison",
        comparison_id=comparison_id,
        data_url=f"/ui/comparisons/{comparison_id}",
        embedded=None,
        csrf_token=csrf_token,
    )


def render_share_page(payload: Mapping[str, Any]) -> str:
    """The read-only shared comparison with its data embedded (no further requests)."""
    title = str(payload.get("title") or "Shared comparison")
    return render(
        "compare.html",
        page="share",
        title=title,
        comparison_id=None,
        data_url=None,
        embedded=figures.to_json(payload),
        readonly=True,
    )


def render_not_found(what: str, message: str, readonly: bool = False) -> str:
    """A friendly 404 page."""
    return render(
        "error.html", page="error", title="Not found", what=what, message=message, readonly=readonly
    )


# --------------------------------------------------------------------------- data assembly


def display_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One name per run (its checkpoint's name), made unique with the run id where two runs
    share a name."""
    names = [str(r.get("checkpoint_name") or r.get("name") or f"run {r.get('id')}") for r in runs]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [
        f"{n} ({str(r.get('id'))[:6]})" if seen[n] > 1 else n
        for n, r in zip(names, runs, strict=True)
    ]


def comparison_data(
    comparison: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The compare/share page payload from plain dicts: ``comparison`` ({id, title, …}) and
    ``runs`` (``run_public`` dicts with ``report``)."""
    named = [{**r, "name": name} for r, name in zip(runs, display_names(runs), strict=True)]
    payload = figures.compare_payload(named)
    payload["comparison"] = {
        "id": comparison.get("id"),
        "title": comparison.get("title") or "",
        "shared": comparison.get("shared"),
        "created_at": _iso(comparison.get("created_at")),
    }
    payload["title"] = comparison.get("title") or ""
    return payload


def run_row(run: Mapping[str, Any], scalars: Mapping[str, Any] | None) -> dict[str, Any]:
    """One row of the runs table from a ``run_public`` dict (without report), the report's
    header (``report_head``) and the run's queryable scalars."""
    head = figures.mapping(run.get("report_head"))
    metrics = figures.mapping(head.get("metrics"))
    model = figures.mapping(head.get("model"))
    scalars = dict(scalars or {})
    headline = {mid: figures.num(scalars.get(mid)) for mid, _ in figures.HEADLINE_MEASURES}
    headline.update(
        {mid: figures.num(v) for mid, v in sorted(scalars.items()) if mid.startswith("bound.")}
    )
    return {
        "id": run.get("id"),
        "name": run.get("checkpoint_name") or run.get("id"),
        "status": run.get("status"),
        "progress": run.get("progress"),
        "message": run.get("message"),
        "error": run.get("error"),
        "dataset": run.get("dataset"),
        "model": model.get("arch") or model.get("format"),
        "num_params": model.get("num_params"),
        "created_at": _iso(run.get("created_at")),
        "train_accuracy": figures.num(metrics.get("train_accuracy")),
        "test_accuracy": figures.num(metrics.get("test_accuracy")),
        "generalization_gap": figures.num(metrics.get("generalization_gap")),
        "scalars": headline,
    }


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def _json(
    payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=figures.to_json(payload),
        status_code=status_code,
        media_type="application/json",
        headers=dict(headers or {"Cache-Control": "no-store"}),
    )


def _html(
    content: str, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=dict(headers or SECURITY_HEADERS))


# --------------------------------------------------------------------------- static routes


@lru_cache(maxsize=1)
def _plotly_js() -> tuple[bytes, bytes, str]:
    """plotly.js as bytes, gzipped (about 4.8 MB → 1.4 MB), and its ETag; built once."""
    from plotly.offline import get_plotlyjs

    body = get_plotlyjs().encode("utf-8")
    return body, gzip.compress(body, 6), '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@router.get(PLOTLY_JS_PATH)
def plotly_js(request: Request) -> Response:
    """plotly.js from the installed plotly package (works offline), cached for a year."""
    body, zipped, etag = _plotly_js()
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable",
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = zipped
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)


_ARCH_SCRIPT = (
    "import json; from genscope.io.zoo import describe_architectures as d; print(json.dumps(d()))"
)
_arch_lock = threading.Lock()
_arch_cache: list[dict[str, Any]] = []
_arch_failed_at: list[float] = []  # when the last attempt failed (retry after a minute)


def architecture_catalogue(timeout: float = 120.0) -> list[dict[str, Any]]:
    """The zoo's architectures with their config fields (``describe_architectures()``).

    The zoo imports torch, which the API process must not: the catalogue comes from a
    subprocess, once per process.
    """
    with _arch_lock:
        if not _arch_cache:
            if _arch_failed_at and time.monotonic() - _arch_failed_at[-1] < 60:
                return []
            proc = subprocess.run(
                [sys.executable, "-c", _ARCH_SCRIPT],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if proc.returncode != 0:
                log.error("describe_architectures failed: %s", proc.stderr[-2000:])
                _arch_failed_at.append(time.monotonic())
                return []
            _arch_cache.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
        return list(_arch_cache)


@router.get("/ui/architectures")
async def architectures() -> Response:
    """The architecture picker's catalogue: ``{data: [{name, description, fields}]}``."""
    try:
        data = await run_in_threadpool(architecture_catalogue)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        log.exception("the architecture catalogue is unavailable")
        data = []
    return _json({"data": data, "count": len(data)}, headers={"Cache-Control": "max-age=300"})


# --------------------------------------------------------------------------- HTML pages


def _csrf(request: Request) -> str:
    """The CSRF token the page's scripts send with every change (empty without the backend)."""
    try:
        from backend.core.exposure import app_settings, csrf_token
    except ImportError:
        return ""
    return csrf_token(app_settings(request.app))


@router.get("/", response_class=HTMLResponse)
def dashboard_page(request: Request) -> HTMLResponse:
    """The runs table and upload panel."""
    return _html(render_dashboard(_csrf(request)))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, request: Request) -> HTMLResponse:
    """One run's page (data loaded by the browser, with the caller's credentials)."""
    return _html(render_run_page(run_id, _csrf(request)))


@router.get("/compare/{comparison_id}", response_class=HTMLResponse)
def compare_page(comparison_id: str, request: Request) -> HTMLResponse:
    """The owner's comparison page (data loaded by the browser, with the caller's credentials)."""
    return _html(render_compare_page(comparison_id, _csrf(request)))


# --------------------------------------------------------------------------- data routes
# These need the service's data access (backend.crud and the dependency aliases). Without the
# backend package the HTML pages above still import and render; the data routes are absent.

try:
    from backend import crud
    from backend.api.deps import BlobsDep, CurrentUser, SessionDep
    from backend.core.errors import NotFound
    from backend.memo import SizedLRU
    from backend.run_state import FINISHED, SUCCEEDED, Status
except ImportError:  # pragma: no cover - the dashboard without the service
    crud = None  # type: ignore[assignment]
    log.warning("backend package unavailable: the dashboard's data routes are disabled")


if crud is not None:
    #: Figures of finished runs and comparisons never change: built once, kept by size.
    _PAYLOADS = SizedLRU(64 << 20)

    def _run_key(run: Any) -> tuple[Any, ...]:
        return (
            run.id,
            run.status,
            run.finished_at,
            tuple((r.measure_id, r.blob_sha256) for r in run.results),
        )

    def _memo_payload(key: tuple[Any, ...], build: Any) -> Any:
        """``build()`` once per key (the payloads are read-only once made)."""

        def make() -> tuple[Any, int]:
            payload = build()
            return payload, len(json.dumps(payload, default=str))

        return _PAYLOADS.get_or_make(key, make)

    def _comparison_payload(
        session: Any, blobs: Any, comparison: Any, shared: bool | None
    ) -> dict[str, Any]:
        """The compare/share payload, memoised once every run has finished."""
        runs = crud.comparison_runs(session, comparison=comparison)
        head = {
            "id": comparison.id,
            "title": comparison.title,
            "shared": shared,
            "created_at": comparison.created_at,
        }

        def build() -> dict[str, Any]:
            publics = [crud.run_public(run=r, blobs=blobs, with_report=True) for r in runs]
            return comparison_data(head, publics)

        if any(r.status not in FINISHED for r in runs):
            return build()
        key = ("comparison", tuple(head.items()), tuple(_run_key(r) for r in runs))
        key += (tuple(r.checkpoint.name if r.checkpoint else None for r in runs),)
        return _memo_payload(key, build)

    @router.get("/share/{token}", response_class=HTMLResponse)
    def share_page(token: str, session: SessionDep, blobs: BlobsDep) -> HTMLResponse:
        """The shared comparison, read-only; 404 when the link is unknown or revoked."""
        payload = _shared_payload(session, blobs, token)
        if payload is None:
            return _html(
                render_not_found(
                    "share link",
                    "This link does not exist or has been revoked by its owner.",
                    readonly=True,
                ),
                status_code=404,
                headers=SHARE_HEADERS,
            )
        return _html(render_share_page(payload), headers=SHARE_HEADERS)

    @router.get("/ui/share/{token}")
    def share_data(token: str, session: SessionDep, blobs: BlobsDep) -> Response:
        """The shared comparison's figures and tables (no authentication)."""
        payload = _shared_payload(session, blobs, token)
        if payload is None:
            return JSONResponse(
                {"code": "not_found", "message": "share link not found or revoked", "detail": None},
                status_code=404,
                headers=SHARE_HEADERS,
            )
        return _json(payload, headers=SHARE_HEADERS)

    def _shared_payload(session: Any, blobs: Any, token: str) -> dict[str, Any] | None:
        comparison = crud.get_comparison_by_share_token(session, token=token)
        if comparison is None:
            return None
        shared = _comparison_payload(session, blobs, comparison, None)
        data = dict(shared)  # the memoised payload stays as it is: copy what changes
        # the owner's ids are not needed by readers; nothing beyond what the page shows
        data["comparison"] = {**shared["comparison"], "id": None, "created_at": None}
        data["runs"] = [{**run, "id": None} for run in shared["runs"]]
        return data

    @router.get("/ui/runs")
    def runs_data(
        session: SessionDep,
        user: CurrentUser,
        offset: int = Query(0, ge=0, le=2**31 - 1),
        limit: int = Query(RUNS_PAGE, ge=1, le=500),
        status: Status | Literal[""] | None = None,
    ) -> Response:
        """The runs table: the caller's runs (newest first) with their headline scalars."""
        runs, count = crud.list_runs(
            session, user=user, offset=offset, limit=limit, status=status or None
        )
        scalars = crud.measure_values(session, run_ids=[r.id for r in runs])
        rows = []
        for run in runs:
            public = crud.run_public(run=run, blobs=None, with_report=False)  # type: ignore[arg-type]
            public["report_head"] = run.report_head
            rows.append(run_row(public, scalars.get(run.id)))
        return _json({"data": rows, "count": count, "offset": offset, "limit": limit})

    @router.get("/ui/runs/{run_id}")
    def run_data(
        run_id: str,
        session: SessionDep,
        user: CurrentUser,
        blobs: BlobsDep,
        figures_: bool = Query(False, alias="figures"),
    ) -> Response:
        """A run's status and progress; with ``figures=1`` and a report, its figures too."""
        run = crud.get_run(session, run_id=run_id, user=user)
        public = crud.run_public(run=run, blobs=blobs, with_report=False)
        public["name"] = public.get("checkpoint_name") or run.id
        public["report_head"] = run.report_head
        out: dict[str, Any] = {"run": public, "payload": None}
        if figures_ and run.status == SUCCEEDED:

            def build() -> dict[str, Any]:
                return figures.run_payload({"report": crud.run_report(run=run, blobs=blobs)})

            out["payload"] = _memo_payload(("run", *_run_key(run)), build)
        return _json(out)

    @router.get("/ui/runs/{run_id}/report.json")
    def run_report_download(
        run_id: str, session: SessionDep, user: CurrentUser, blobs: BlobsDep
    ) -> Response:
        """The run's full report (schema genscope.report/1) as a file download."""
        run = crud.get_run(session, run_id=run_id, user=user)
        report = crud.run_report(run=run, blobs=blobs)
        if report is None:
            raise NotFound("report", run_id)
        return _json(
            report,
            headers={
                "Content-Disposition": f'attachment; filename="genscope-{run.id}.report.json"',
                "Cache-Control": "no-store",
            },
        )

    @router.get("/ui/comparisons/{comparison_id}")
    def comparison_page_data(
        comparison_id: str, session: SessionDep, user: CurrentUser, blobs: BlobsDep
    ) -> Response:
        """The owner's comparison: runs, figures, scalar table and gap correlations."""
        comparison = crud.get_comparison(session, comparison_id=comparison_id, user=user)
        shared = crud.active_share_count(session, comparison=comparison) > 0
        return _json(_comparison_payload(session, blobs, comparison, shared))
