"""``genscope demo --exit``: trains models, serves, submits through the real API and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_demo_runs_to_completion_and_prints_the_comparison(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env["GENSCOPE_DATA_DIR"] = str(tmp_path / "data")
    env["GENSCOPE_TORCH_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "genscope.cli", "demo", "--exit", "--port", "0", "--models", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert out.count("succeeded") == 2
    assert re.search(r"comparison: http://127\.0\.0\.1:\d+/compare/[0-9a-f]{32}", out), out
    assert re.search(r"share link: http://127\.0\.0\.1:\d+/share/[\w-]{40,}", out), out
    assert (tmp_path / "data" / "genscope.sqlite").is_file()
