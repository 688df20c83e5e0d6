"""``bench/curvature.py`` keeps working: a tiny CIFAR-shaped ResNet, GenScope alone, briefly.

Runs the curvature benchmark as a subprocess on a width-4 ResNet-8 with 32 examples and no
comparison library (the real run installs them; CI does not); it must exit 0 and write every
section, with certified top-k rows, and a density whose largest node matches λ_1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| CIFAR ResNet-8 \| (top-1|top-5|trace|density) \| GenScope .*$", re.M)


def test_curvature_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "curvature.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "curvature.py"),
            "--threads",
            "1",
            "--workloads",
            "resnet",
            "--resnet",
            "8,4,32",
            "--libraries",
            "none",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Workloads and references", "## HVP cost by path", "## Side by side"):
        assert heading in text
    rows = {m.group(1): m.group(0) for m in ROW.finditer(text)}
    assert set(rows) == {"top-1", "top-5", "trace", "density"}
    for task in ("top-1", "top-5"):
        residual = float(rows[task].split("|")[7])
        assert residual <= 1e-4, rows[task]
    assert float(rows["density"].split("|")[8]) <= 1e-4, rows["density"]
    assert "never reached" not in text  # libraries not run are not reported as failing
    assert "device CPU" in text
