"""The dashboard in a real browser: Debian's headless Chromium against ``genscope serve``.

One server (API, dashboard and its worker child, SQLite in a temporary data directory) serves
the whole module. The tests run in order and build on each other, like a user would:

upload a checkpoint in the page → the run completes → its margin plots and per-class margin CDFs
(from the engine's per-example labels) are drawn, and a run started through the API draws its
sharpness ρ-curve (``sharpness.sam``'s sweep) → the runs table lists, sorts and filters runs →
compare three runs → create a share link → open it in a fresh browser profile without
credentials → revoke it → the link answers 404.
Along the way: a refused pickle shows its error inline, and names and titles holding HTML are
shown as text. No page may log a console error. Screenshots go to
``$GENSCOPE_E2E_SCREENSHOTS`` (default ``/tmp/genscope-e2e``) for review.

Skipped, with the reason, when Chromium, its driver or selenium is missing
(``apt-get install chromium chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    console_errors,
    figure_state,
    httpx,
    js,
    screenshot,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.e2e

XSS_NAME = '<img src=x onerror="window.__xss=1"><b>wide</b>'
XSS_TITLE = "<script>window.__xss=2</script>Sweep & <i>friends</i>"
MLP_CONFIG = {"input_dim": 64, "num_classes": 10}
FAST_MEASURES = ("margin.output", "margin.all_layer", "margin.normalized", "bound.spectral")
#: The runs started through the API also compute a radius measure, kept cheap by its parameters:
#: its ρ sweep draws the sharpness curves.
RADIUS_MEASURE = "sharpness.sam"
RADIUS_PARAMS = {"steps": 2, "samples": 256}

from selenium.webdriver.common.by import By  # noqa: E402

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small MLPs for digits (safetensors state dicts, zoo ``mlp``), trained for a few
    full-batch steps so their margins differ, and one pickled module (refused on upload)."""
    import torch
    from safetensors.torch import save_file

    from genscope.io.datasets import load_dataset
    from genscope.io.zoo import build_model

    folder = tmp_path_factory.mktemp("checkpoints")
    data = load_dataset("digits")
    x, y = data.x_train.flatten(1), data.y_train
    out: dict[str, Path] = {}
    for k, (width, steps) in enumerate(((16, 5), (32, 40), (64, 120))):
        torch.manual_seed(k)
        model = build_model("mlp", {**MLP_CONFIG, "widths": [width]})
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        path = folder / f"mlp-w{width}.safetensors"
        save_file({n: t.detach().contiguous() for n, t in model.state_dict().items()}, path)
        out[f"w{width}"] = path
    pickled = folder / "pickled-module.pt"
    torch.save(torch.nn.Linear(64, 10), pickled)
    out["pickle"] = pickled
    return out


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What one test leaves for the next (run ids, the comparison, its share link)."""
    return {}


# --------------------------------------------------------------------------- helpers


def api_upload(base: str, path: Path, name: str, width: int) -> str:
    with path.open("rb") as fh:
        answer = httpx.post(
            base + "/api/checkpoints",
            files={"file": (path.name, fh)},
            data={
                "name": name,
                "arch": "mlp",
                "arch_config": json.dumps({**MLP_CONFIG, "widths": [width]}),
            },
            timeout=120,
        )
    assert answer.status_code == 201, answer.text
    run = httpx.post(
        base + "/api/runs",
        json={
            "checkpoint_id": answer.json()["id"],
            "dataset": "digits",
            "measures": [*FAST_MEASURES, RADIUS_MEASURE],
            "params": {RADIUS_MEASURE: RADIUS_PARAMS},
        },
        timeout=60,
    )
    assert run.status_code == 202, run.text
    return str(run.json()["id"])


def wait_succeeded(base: str, run_id: str, timeout: float = 150) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = httpx.get(f"{base}/api/runs/{run_id}", params={"report": "false"}, timeout=10).json()
        if body["status"] == "failed":
            raise AssertionError(f"run {run_id} failed: {body.get('error')}")
        return body if body["status"] == "succeeded" else None

    return wait_for(done, timeout, f"run {run_id} to succeed")


def assert_bound_badge(driver: Any, base: str, run_id: str) -> str:
    """The open run page's bound badge says what the engine decided: ``no value``, ``vacuous``,
    ``not informative`` or ``informative`` (measures.md, Bounds)."""
    body = httpx.get(f"{base}/api/runs/{run_id}", timeout=30).json()
    bound = body["report"]["measures"]["bound.spectral"]
    if bound["value"] is None:
        verdict = "no value"
    elif bound["vacuous"]:
        verdict = "vacuous"
    else:
        verdict = "informative" if bound["informative"] else "not informative"
    card = driver.find_element(By.ID, "bounds-tables")
    badges = [b.text for b in card.find_elements(By.CSS_SELECTOR, "summary .badge")]
    assert badges == [verdict], (badges, bound.get("value"), bound.get("reason"))
    return verdict


# --------------------------------------------------------------------------- the tests


def test_upload_in_the_page_runs_and_draws_margins(
    server: str, browser: Any, checkpoints: dict[str, Path], state: dict[str, Any]
) -> None:
    # two more runs through the API first: the worker analyses them while we click
    state["api_runs"] = [
        api_upload(server, checkpoints["w32"], "mlp-w32", 32),
        api_upload(server, checkpoints["w64"], XSS_NAME, 64),
    ]
    browser.get(server + "/")
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#arch-select option[value=mlp]"),
        90,
        "the architecture catalogue",
    )
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#measure-groups input[value=margins]"),
        90,
        "the measure catalogue",
    )
    browser.find_element(By.ID, "file-input").send_keys(str(checkpoints["w16"]))
    assert "mlp-w16.safetensors" in browser.find_element(By.ID, "file-name").text
    browser.find_element(By.ID, "run-name").send_keys("mlp-w16")
    js(
        browser,
        "const s = document.getElementById('arch-select'); s.value = 'mlp';"
        "s.dispatchEvent(new Event('change'));",
    )
    for field, value in (("input_dim", "64"), ("num_classes", "10"), ("widths", "[16]")):
        box = browser.find_element(By.ID, f"arch-field-{field}")
        box.clear()
        box.send_keys(value)
    # the margins group is ticked by default; keep three of its measures (fast ones)
    group = browser.find_element(By.CSS_SELECTOR, "#measure-groups input[value=margins]")
    assert group.is_selected()
    js(browser, "document.querySelector('#measure-groups input[value=margins]').click()")
    js(browser, "document.querySelectorAll('#measure-groups details').forEach(d => d.open = true)")
    for mid in FAST_MEASURES:
        browser.find_element(By.CSS_SELECTOR, f"#measure-groups input[value='{mid}']").click()
    assert not group.is_selected()
    screenshot(browser, "01-upload-form")
    browser.find_element(By.ID, "upload-submit").click()
    wait_for(lambda: "/runs/" in browser.current_url, 60, "the run page")
    state["ui_run"] = browser.current_url.rsplit("/", 1)[-1]
    wait_ready(browser, 150)
    assert browser.find_element(By.ID, "run-status").text == "succeeded"
    margin = wait_for(
        lambda: (s := figure_state(browser, "fig-margin_distribution")) and s["svg"] and s,
        30,
        "the margin distribution plot",
    )
    assert margin["visible"] == 2 and margin["marks"] > 0  # histogram and CDF drawn as SVG
    assert figure_state(browser, "fig-margin_per_class")["visible"] == 10
    # drawn from the per-example labels the engine records beside the margins
    classes = wait_for(
        lambda: (s := figure_state(browser, "fig-margin_class_cdf")) and s["marks"] and s,
        30,
        "the per-class output-margin CDFs",
    )
    assert classes["visible"] == 10 and classes["names"] == [f"class {c}" for c in range(10)]
    assert "All measures" in browser.find_element(By.ID, "tables").text
    assert_bound_badge(browser, server, state["ui_run"])
    # every figure exports as PNG and SVG (what the modebar and the links below it do)
    for fmt, prefix in (("png", "data:image/png"), ("svg", "data:image/svg+xml")):
        url = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Plotly.toImage(document.getElementById('fig-margin_distribution'),"
            " {format: arguments[0], width: 600, height: 400})"
            ".then(done, e => done('error: ' + e));",
            fmt,
        )
        assert url.startswith(prefix), url[:80]
    report = httpx.get(f"{server}/ui/runs/{state['ui_run']}/report.json", timeout=30)
    assert report.status_code == 200
    assert "attachment" in report.headers["content-disposition"]
    assert report.json()["schema"] == "genscope.report/1"
    screenshot(browser, "02-run-page")
    trained = state["api_runs"][1]  # the longest-trained network: a positive margin, a bound
    wait_succeeded(server, trained)
    browser.get(f"{server}/runs/{trained}")
    wait_ready(browser, 60)
    assert assert_bound_badge(browser, server, trained) != "no value"
    # the radius measure's ρ sweep, as the engine records it
    curves = wait_for(
        lambda: (s := figure_state(browser, "fig-sharpness_curves")) and s["marks"] and s,
        30,
        "the sharpness ρ-curves",
    )
    assert curves["names"] == [RADIUS_MEASURE]
    sweep = httpx.get(f"{server}/api/runs/{trained}", timeout=30).json()
    assert len(sweep["report"]["measures"][RADIUS_MEASURE]["rho_curve"]["rho"]) > 1
    screenshot(browser, "02a-run-page-sharpness")
    browser.get(f"{server}/runs/{state['ui_run']}")
    wait_ready(browser, 60)
    browser.set_window_size(420, 1000)  # a phone: the page reflows, nothing scrolls sideways
    time.sleep(0.5)
    assert js(browser, "return document.documentElement.scrollWidth") <= 420
    screenshot(browser, "02b-run-page-narrow", width=420)
    assert console_errors(browser) == []


def test_refused_pickle_shows_why_inline(
    server: str, browser: Any, checkpoints: dict[str, Path]
) -> None:
    browser.get(server + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(checkpoints["pickle"]))
    browser.find_element(By.ID, "upload-submit").click()
    box = wait_for(
        lambda: (b := browser.find_element(By.ID, "upload-error")).is_displayed() and b,
        60,
        "the inline upload error",
    )
    assert box.text.strip()
    assert "/runs/" not in browser.current_url
    screenshot(browser, "03-upload-error")
    # the API's 4xx answer is logged by Chromium as a failed resource load: expected here
    errors = [e for e in console_errors(browser) if "/api/checkpoints" not in e]
    assert errors == []


def test_runs_table_lists_sorts_filters_and_escapes(
    server: str, browser: Any, state: dict[str, Any]
) -> None:
    for run_id in state["api_runs"]:
        wait_succeeded(server, run_id)
    browser.get(server + "/")
    rows = wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")) >= 3
            and browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")
        ),
        30,
        "three runs in the table",
    )
    names = [r.find_element(By.CSS_SELECTOR, "td.name").text for r in rows]
    assert XSS_NAME in names  # shown as text, not parsed
    assert js(browser, "return window.__xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#runs-table img")
    # sort by test accuracy, both directions
    header = next(
        th
        for th in browser.find_elements(By.CSS_SELECTOR, "#runs-table th")
        if th.text == "Test acc"
    )
    header.click()
    first = js(
        browser, "return document.querySelector('#runs-table th[aria-sort=descending]').textContent"
    )
    assert first == "Test acc"
    header = next(
        th
        for th in browser.find_elements(By.CSS_SELECTOR, "#runs-table th")
        if th.text == "Test acc"
    )
    header.click()
    assert js(browser, "return !!document.querySelector('#runs-table th[aria-sort=ascending]')")
    # filter
    box = browser.find_element(By.ID, "run-filter")
    box.send_keys("w16")
    wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")) == 1
        ),
        10,
        "the filter",
    )
    box.clear()
    box.send_keys(" ")  # input event with an empty query
    box.clear()
    js(browser, "document.getElementById('run-filter').dispatchEvent(new Event('input'))")
    wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")) >= 3
        ),
        10,
        "the unfiltered table",
    )
    screenshot(browser, "04-runs-table")
    assert console_errors(browser) == []


def test_compare_overlays_runs_with_one_colour_each(
    server: str, browser: Any, state: dict[str, Any]
) -> None:
    browser.get(server + "/")
    wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")) >= 3
        ),
        30,
        "the runs",
    )
    for row in browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run-id]")[:3]:
        row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    button = browser.find_element(By.ID, "compare-btn")
    assert button.is_enabled()
    button.click()
    wait_for(lambda: "/compare/" in browser.current_url, 30, "the compare page")
    state["comparison"] = browser.current_url.rsplit("/", 1)[-1]
    wait_ready(browser, 60)
    cdfs = wait_for(
        lambda: (s := figure_state(browser, "fig-compare_margin_cdfs")) and s["svg"] and s,
        30,
        "the overlaid CDFs",
    )
    assert cdfs["visible"] == 3
    assert len(set(cdfs["colors"])) == 3  # one colour per run
    assert cdfs["marks"] > 0
    legend = browser.find_element(By.ID, "run-legend").text
    assert XSS_NAME in legend and js(browser, "return window.__xss === undefined")
    # the scalar table highlights the best value of rows with a direction
    assert browser.find_elements(By.CSS_SELECTOR, "#scalar-table td.best")
    # deltas follow the chosen baseline: none in its own column
    js(
        browser,
        "const s = document.getElementById('baseline-select'); s.value = '1';"
        "s.dispatchEvent(new Event('change'));",
    )
    deltas = js(
        browser,
        "return Array.from(document.querySelectorAll('#scalar-table tbody tr'))"
        ".map(tr => Array.from(tr.querySelectorAll('td.num'))"
        ".map(td => !!td.querySelector('.delta')))",
    )
    assert deltas and all(not row[1] for row in deltas)
    assert any(row[0] or row[2] for row in deltas)
    # three runs: each measure against the gap, with Kendall τ-a
    if figure_state(browser, "fig-gap_scatter"):
        assert browser.find_element(By.ID, "corr-card").is_displayed()
    # loss between two runs, on request: a new landscape.interpolate run
    assert browser.find_element(By.ID, "interp-card").is_displayed()
    browser.find_element(By.ID, "interp-btn").click()
    link = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#interp-status a"),
        30,
        "the interpolation run",
    )
    assert "interpolation run" in link[0].text
    assert "/runs/" in (link[0].get_attribute("href") or "")
    screenshot(browser, "05-compare")
    assert console_errors(browser) == []


def test_share_link_read_only_then_revoked(
    server: str, browser: Any, fresh_browser: Any, state: dict[str, Any]
) -> None:
    js(browser, "window.scrollTo(0, 0)")  # the share controls sit under the sticky header
    browser.find_element(By.ID, "share-btn").click()
    url = wait_for(
        lambda: browser.find_element(By.ID, "share-url").get_attribute("value"), 30, "a share URL"
    )
    assert "/share/" in url
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200
    assert "noindex" in answer.headers.get("x-robots-tag", "")
    # the figures are memoised once the runs have finished: readers never get the owner's ids,
    # and hiding them from readers does not change the owner's copy
    token = url.rsplit("/", 1)[-1]
    owner_url = f"{server}/ui/comparisons/{state['comparison']}"
    for _ in range(2):
        shared = httpx.get(f"{server}/ui/share/{token}", timeout=30).json()
        assert shared["comparison"]["id"] is None
        assert all(run["id"] is None for run in shared["runs"])
        owner = httpx.get(owner_url, timeout=30).json()
        assert owner["comparison"]["id"] == state["comparison"] and owner["comparison"]["shared"]
        assert all(run["id"] for run in owner["runs"])
    assert answer.headers.get("referrer-policy") == "no-referrer"

    fresh_browser.get(url)
    wait_ready(fresh_browser, 60)
    cdfs = wait_for(
        lambda: (s := figure_state(fresh_browser, "fig-compare_margin_cdfs")) and s["svg"] and s,
        30,
        "the shared CDFs",
    )
    assert cdfs["visible"] == 3
    # read-only: no share controls, no links into the owner's runs, noindex in the page too
    assert not fresh_browser.find_elements(By.ID, "share-btn")
    assert not fresh_browser.find_elements(By.CSS_SELECTOR, "a[href^='/runs/']")
    assert fresh_browser.find_elements(By.CSS_SELECTOR, "meta[name=robots][content*=noindex]")
    screenshot(fresh_browser, "06-share")
    assert console_errors(fresh_browser) == []

    revoke = browser.find_element(By.ID, "revoke-btn")
    assert revoke.is_displayed()
    revoke.click()
    wait_for(lambda: browser.find_element(By.ID, "flash").is_displayed(), 30, "the revocation")
    assert httpx.get(url, timeout=30).status_code == 404
    fresh_browser.get(url)
    assert "revoked" in fresh_browser.find_element(By.TAG_NAME, "main").text
    screenshot(fresh_browser, "07-share-revoked")
    # the 404 page itself is logged as a failed load; nothing else may be
    assert [e for e in console_errors(fresh_browser) if "/share/" not in e] == []


def test_comparison_title_with_html_is_text(
    server: str, fresh_browser: Any, state: dict[str, Any]
) -> None:
    made = httpx.post(
        server + "/api/comparisons",
        json={"run_ids": [state["ui_run"], *state["api_runs"]], "title": XSS_TITLE},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    fresh_browser.get(made.json()["share_url"])
    wait_ready(fresh_browser, 60)
    assert fresh_browser.find_element(By.ID, "compare-title").text == XSS_TITLE
    assert js(fresh_browser, "return window.__xss === undefined")
    assert not fresh_browser.find_elements(
        By.CSS_SELECTOR, "#compare-title i, main script:not([type])"
    )
    assert console_errors(fresh_browser) == []


def test_dashboard_lists_the_comparisons(server: str, browser: Any) -> None:
    browser.get(server + "/")
    items = wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#comparisons-list li")) >= 2
            and browser.find_elements(By.CSS_SELECTOR, "#comparisons-list li a")
        ),
        30,
        "the comparisons list",
    )
    assert XSS_TITLE in [a.text for a in items]  # the title is text, not markup
    assert js(browser, "return window.__xss === undefined")
    # select every run of the page from the header box
    browser.find_element(By.ID, "select-page").click()
    assert browser.find_element(By.ID, "compare-btn").is_enabled()
    screenshot(browser, "08-dashboard")
    assert console_errors(browser) == []


def test_api_docs_render_from_the_installed_bundle(server: str, browser: Any) -> None:
    """Swagger UI draws the API (every operation listed) under the docs page's strict CSP: no
    script from elsewhere, no inline script, no console error."""
    browser.get(server + "/docs")
    operations = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), 30, "Swagger UI"
    )
    paths = {op.text.replace("\u200b", "") for op in operations}
    assert "/api/checkpoints" in paths and "/api/runs" in paths
    scripts = js(browser, "return [...document.scripts].map(s => s.src)")
    assert all(src.startswith(server + "/docs/") for src in scripts), scripts
    screenshot(browser, "09-api-docs")
    assert console_errors(browser) == []
