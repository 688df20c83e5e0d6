"""What the browser tests share: starting ``genscope serve``, driving headless Chromium, waiting.

:func:`start_server` runs ``genscope serve`` on a free port with a fresh data directory (extra
environment variables as given) and yields its base URL; :func:`chrome` opens a headless Chromium
with its own profile. The remaining helpers wait for conditions and read the page's state.
Importing this module skips the test module that imports it, with the reason, when Chromium, its
driver or selenium is missing (``apt-get install chromium chromium-driver``; ``pip install
selenium``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("GENSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GENSCOPE_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("GENSCOPE_E2E_SCREENSHOTS", "/tmp/genscope-e2e"))

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
httpx = pytest.importorskip("httpx")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}); "
        "install it with: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402

from genscope.demo import free_port  # noqa: E402


@contextmanager
def start_server(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``genscope serve`` on a free port with ``data_dir`` as its data directory and ``env`` on
    top of this process's environment (``GENSCOPE_AUTH=off`` unless given); stopped afterwards."""
    port = free_port("127.0.0.1")
    full_env = dict(os.environ, GENSCOPE_DATA_DIR=str(data_dir), GENSCOPE_AUTH="off", **(env or {}))
    log = (data_dir / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genscope.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the worker child is stopped with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"genscope serve exited ({proc.returncode}):\n{server_log(data_dir)}")
            try:
                if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"genscope serve did not answer in 90 s:\n{server_log(data_dir)}")
            time.sleep(0.3)
        yield base
    finally:
        _stop_group(proc)
        log.close()


def server_log(data_dir: Path) -> str:
    """The last 4000 characters of the server's log."""
    path = data_dir / "serve.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _stop_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def chrome(profile: Path) -> Any:
    """A headless Chromium with ``profile`` as its user-data directory (no network of its own
    beyond the pages it is sent to)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@contextmanager
def browser_session(prefix: str = "genscope-chrome-") -> Iterator[Any]:
    """A Chromium with a fresh profile, removed afterwards."""
    profile = Path(tempfile.mkdtemp(prefix=prefix))
    driver = chrome(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # stale elements while the page re-renders
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def console_errors(driver: Any) -> list[str]:
    """SEVERE browser log entries since the last call (console errors, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str, width: int = 1400) -> Path:
    """A full-page screenshot (the window grown to the page's height)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(width, 1000)
    time.sleep(0.3)
    height = js(driver, "return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height) + 40, 800), 8000))
    time.sleep(0.5)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def figure_state(driver: Any, fig_id: str) -> dict[str, Any]:
    """How a plotly div rendered: traces, visible traces with points, SVG marks drawn."""
    return js(
        driver,
        """
        const gd = document.getElementById(arguments[0]);
        if (!gd || !gd._fullData) return null;
        const vis = gd._fullData.filter(t => t.visible === true);
        return {
          traces: gd.data.length,
          visible: vis.length,
          names: vis.map(t => t.name),
          colors: vis.map(t => (t.line && t.line.color) || (t.marker && t.marker.color) || null),
          svg: gd.querySelectorAll('svg.main-svg').length,
          marks: gd.querySelectorAll('.plot path, .plot .point').length,
        };
        """,
        fig_id,
    )


def wait_ready(driver: Any, timeout: float = 60) -> None:
    wait_for(
        lambda: js(driver, "return document.body.getAttribute('data-ready') === 'true'"),
        timeout,
        "the page's data",
    )
