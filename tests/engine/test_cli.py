"""The command line: reports written, one-line errors with non-zero exits, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genscope.io.zoo import build_model
from genscope.report import validate_report
from tests.engine.helpers import PlantsFile, export_pt2, save_safetensors

MLP = {"input_dim": 64, "widths": [16], "num_classes": 10}


def genscope_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genscope.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"[{code}]" in lines[0], proc.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    net = build_model("mlp", MLP).eval()
    evil = tmp / "evil.pt"
    torch.save({"m": PlantsFile(str(tmp / "pwned"))}, evil)
    truncated = tmp / "trunc.pt2"
    data = export_pt2(net, torch.zeros(2, 1, 8, 8), tmp / "full.pt2").read_bytes()
    truncated.write_bytes(data[:300])
    return {
        "pt2": export_pt2(net, torch.zeros(2, 1, 8, 8), tmp / "mlp.pt2"),
        "weights": save_safetensors(net, tmp / "mlp.safetensors"),
        "evil": evil,
        "truncated": truncated,
        "tmp": tmp,
    }


def test_analyze_writes_a_valid_report(files) -> None:
    out = files["tmp"] / "r.json"
    proc = genscope_cli(
        "analyze",
        str(files["pt2"]),
        "--data",
        "digits",
        "--out",
        str(out),
        "--measures",
        "margin.output",
        "--dtype",
        "float64",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert validate_report(report) == []
    assert report["settings"]["dtype"] == "float64"
    assert "generalization gap" in proc.stdout and str(out) in proc.stdout


def test_quiet_prints_only_the_path(files) -> None:
    out = files["tmp"] / "q.json"
    proc = genscope_cli(
        "analyze",
        str(files["weights"]),
        "--data",
        "digits",
        "--arch",
        "mlp",
        "--arch-config",
        json.dumps(MLP),
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and proc.stderr == ""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["evil"], "unsafe_checkpoint"),
        (["truncated"], "bad_checkpoint"),
        (["weights"], "bad_checkpoint"),  # no --arch
        (
            ["weights", "--arch", "mlp", "--arch-config", '{"input_dim": 64, "widths": [99]}'],
            "weight_mismatch",
        ),
        (["weights", "--arch", "mlp", "--arch-config", "{not json"], "bad_architecture"),
        (["weights", "--arch", "transformer"], "bad_architecture"),
        (["pt2", "--measures", "margin.nope"], "unknown_measure"),
        (["pt2", "--param", "margin.output.k=3"], "bad_parameter"),
        (["pt2", "--dtype", "float16"], "bad_parameter"),
        (["pt2", "--data", "moons"], "shape_mismatch"),
        (["pt2", "--data", "npz:/nonexistent.npz"], "bad_dataset"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(files, args: list[str], code: str) -> None:
    path = str(files[args[0]])
    rest = args[1:]
    if "--data" not in rest:
        rest = [*rest, "--data", "digits"]
    proc = genscope_cli("analyze", path, *rest, "--out", str(files["tmp"] / "x.json"))
    assert_one_line_error(proc, code)
    assert not (files["tmp"] / "pwned").exists()


def test_measures_listing() -> None:
    proc = genscope_cli("measures", "--json")
    assert proc.returncode == 0
    ids = {m["id"] for m in json.loads(proc.stdout)}
    assert "margin.output" in ids
