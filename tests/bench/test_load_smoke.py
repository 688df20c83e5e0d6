"""``bench/load.py --smoke`` keeps working: the whole stack on the embedded defaults, briefly.

Runs the load benchmark as a subprocess (API + two workers on SQLite and the embedded broker,
5 clients for 3 s, 2 uploads of 5 MiB, 6 queued runs); it must exit 0 with no read error and
no failed check, and write its section to the markdown file it is given.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_load_smoke(tmp_path: Path) -> None:
    """The smoke run exits 0, reports no error and writes its markdown section."""
    out = tmp_path / "load.md"
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--smoke",
            "--db",
            "sqlite",
            "--broker",
            "embedded",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    assert "load bench: OK (0 read errors, 0 failed checks)" in proc.stdout
    text = out.read_text()
    assert "<!-- load:sqlite+embedded-smoke -->" in text
    assert "Result: OK (0 failed checks, 0 read errors)." in text
    assert "| **all routes** |" in text
    print(f"smoke load bench: {elapsed:.0f} s")
