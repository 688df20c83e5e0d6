"""What the sandbox costs: inspection and a run's computation, sandboxed and not, in one run.

Every process that reads a user's file runs under bubblewrap (``backend/sandbox.py``). This bench
times, interleaved round by round so that the machine's load affects every variant alike:

* **inspection** of three uploads (a tiny safetensors MLP, a 50 MiB safetensors MLP, a
  ``torch.export`` CNN) through the API's own function (``backend.inspection.inspect_checkpoint``)
  with ``GENSCOPE_SANDBOX=bwrap`` and ``off`` (both are a ``genscope inspect`` subprocess; the
  difference is bubblewrap's namespaces and mounts);
* **a run's computation** (digits MLP 64-128-10: ``margin.output``, ``margin.hidden``,
  ``hessian.top_eigenvalues``) through the worker's own function
  (``worker.sandboxed.analyze_in_sandbox``) with ``bwrap`` and ``off``, and in the calling
  process (``load_checkpoint`` + ``analyze``: how the worker computed before the sandbox, with
  torch already imported, so the fixed cost of a new process shows in full).

It prints the median wall time of each variant and the ratios.

    python bench/sandbox.py                 # 7 rounds
    python bench/sandbox.py --rounds 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUN_MEASURES = ["margin.output", "margin.hidden", "hessian.top_eigenvalues"]
DIGITS_MLP = {"input_dim": 64, "widths": [128], "num_classes": 10}


def _mlp_file(path: Path, input_dim: int, widths: list[int], classes: int) -> Path:
    """A safetensors state dict of the zoo's ``mlp`` architecture."""
    import torch
    from safetensors.torch import save_file

    from genscope.io.zoo import build_model

    torch.manual_seed(0)
    model = build_model("mlp", {"input_dim": input_dim, "widths": widths, "num_classes": classes})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _export_file(path: Path) -> Path:
    """A ``torch.export`` program of a small CNN (conv, BatchNorm, ReLU, max-pool, linear)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def _settings(data_dir: Path, sandbox: str) -> Any:
    from backend.core.config import Settings

    return Settings(data_dir=data_dir, sandbox=sandbox, torch_threads=1)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from backend.inspection import inspect_checkpoint
    from backend.sandbox import ensure_available
    from genscope import analyze
    from genscope.io.checkpoints import load_checkpoint
    from genscope.measures.context import AnalysisOptions
    from worker.sandboxed import analyze_in_sandbox

    tmp = Path(tempfile.mkdtemp(prefix="genscope-bench-sandbox-"))
    files = {
        "tiny safetensors": (_mlp_file(tmp / "tiny.safetensors", 2, [8], 2), "mlp"),
        "50 MiB safetensors": (_mlp_file(tmp / "big.safetensors", 3500, [3500], 10), "mlp"),
        "export CNN (.pt2)": (_export_file(tmp / "cnn.pt2"), None),
    }
    configs = {
        "tiny safetensors": {"input_dim": 2, "widths": [8], "num_classes": 2},
        "50 MiB safetensors": {"input_dim": 3500, "widths": [3500], "num_classes": 10},
        "export CNN (.pt2)": None,
    }
    digits = _mlp_file(tmp / "digits.safetensors", 64, [128], 10)
    boxes = {mode: _settings(tmp / f"data-{mode}", mode) for mode in ("bwrap", "off")}
    for settings in boxes.values():
        settings.ensure_dirs()
        ensure_available(settings)
    options = {"seed": 0, "hessian_samples": 256, "margin_samples": 2000, "dtype": "float32"}

    def run_in_process() -> None:
        model = load_checkpoint(digits, arch="mlp", arch_config=DIGITS_MLP)
        analyze(model, "digits", measures=RUN_MEASURES, options=AnalysisOptions(**options))

    def run_sandboxed(mode: str) -> None:
        analyze_in_sandbox(
            boxes[mode],
            lambda _f, _m: None,
            digits,
            "mlp",
            DIGITS_MLP,
            "digits",
            RUN_MEASURES,
            {},
            {**options, "device": "cpu"},
        )

    times: dict[str, list[float]] = {}
    run_in_process()  # warm: imports and the digits data set are loaded once
    for k in range(args.rounds):
        for name, (path, arch) in files.items():
            for mode in ("bwrap", "off"):
                times.setdefault(f"inspect {name} [{mode}]", []).append(
                    _timed(
                        lambda p=path, a=arch, n=name, m=mode: inspect_checkpoint(
                            p, a, configs[n], 300, boxes[m]
                        )
                    )
                )
        for mode in ("bwrap", "off"):
            times.setdefault(f"run [{mode}]", []).append(_timed(lambda m=mode: run_sandboxed(m)))
        times.setdefault("run [in process]", []).append(_timed(run_in_process))
        print(f"round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'variant':<42} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in times.items():
        print(f"{name:<42} {med[name]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    print("\nratios (sandboxed / not):")
    for name in files:
        on, off = med[f"inspect {name} [bwrap]"], med[f"inspect {name} [off]"]
        print(f"  inspect {name:<24} {on / off:5.2f}x  (+{1000 * (on - off):.0f} ms)")
    on, off, here = med["run [bwrap]"], med["run [off]"], med["run [in process]"]
    print(f"  run, bwrap / off                 {on / off:5.2f}x  (+{1000 * (on - off):.0f} ms)")
    print(f"  run, bwrap / in process          {on / here:5.2f}x  (+{1000 * (on - here):.0f} ms)")


if __name__ == "__main__":
    main()
