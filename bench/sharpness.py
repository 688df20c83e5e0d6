"""Sharpness, landscape, complexity and bound measures: wall time of each on three workloads.

Workloads: the digits MLP 64-256-256-10 (trained briefly), a LeNet-5 on 8x8 digits (trained
briefly), and a CIFAR-shaped ResNet-20 with BatchNorm in eval mode (two epochs on random data,
512 examples). Each measure runs through ``genscope.analyze`` with its defaults, except where the
table's ``params`` column says otherwise (the ResNet runs use smaller samples and grids so that
the whole benchmark stays within minutes on a 2-core CPU). Times are wall-clock seconds of the
measure alone, as the report records them.

    python bench/sharpness.py                       # all workloads, writes RESULTS-sharpness.md
    python bench/sharpness.py --workloads mlp,cnn
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from genscope import analyze  # noqa: E402
from genscope.io.checkpoints import LoadedModel  # noqa: E402
from genscope.io.datasets import Dataset, from_arrays, load_dataset  # noqa: E402
from genscope.io.zoo import build_model  # noqa: E402
from genscope.measures.context import AnalysisOptions  # noqa: E402

MEASURES = [
    "sharpness.sam",
    "sharpness.adaptive_worst",
    "sharpness.adaptive_average",
    "sharpness.pacbayes_flatness",
    "sharpness.pacbayes_mag_flatness",
    "sharpness.keskar",
    "smoothness.input",
    "landscape.slice_1d",
    "landscape.slice_2d",
    "landscape.interpolate",
    "complexity.params",
    "complexity.spectral",
    "complexity.frobenius",
    "complexity.path_norm",
    "complexity.distance_from_init",
    "complexity.weight_spectrum",
    "bound.spectral",
    "bound.pacbayes_spectral",
    "bound.all_layer",
    "bound.pacbayes_sharpness",
]


@dataclass
class Workload:
    name: str
    arch: str
    config: dict[str, Any]
    data: Dataset
    train_epochs: int
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    margin_samples: int = 10_000


def _train(model: nn.Module, data: Dataset, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(data.n_train, generator=gen)
        for i in range(0, data.n_train, 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[b]), data.y_train[b]).backward()
            opt.step()
    return model.eval()


def workloads() -> dict[str, Workload]:
    digits = load_dataset("digits")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (512,), generator=gen)
    xt = torch.randn(128, 3, 32, 32, generator=gen)
    yt = torch.randint(0, 10, (128,), generator=gen)
    cifar_like = from_arrays("random-cifar", x, y, xt, yt, num_classes=10)
    small = {"samples": 256}
    resnet = {m: dict(small) for m in MEASURES if m.startswith(("sharpness.", "landscape."))}
    resnet["smoothness.input"] = dict(small)
    resnet.pop("landscape.interpolate")
    resnet["landscape.interpolate"] = {"samples": 256, "points": 11}
    resnet["landscape.slice_1d"].update(points=21)
    resnet["landscape.slice_2d"].update(points=7)
    for m in ("sharpness.pacbayes_flatness", "sharpness.pacbayes_mag_flatness"):
        resnet[m].update(draws=5, depth=10)
    resnet["bound.pacbayes_sharpness"] = {"samples": 256, "draws": 5, "depth": 10, "mc_draws": 10}
    return {
        "mlp": Workload(
            "digits MLP 64-256-256-10",
            "mlp",
            {"input_dim": 64, "widths": [256, 256], "num_classes": 10},
            digits,
            train_epochs=30,
        ),
        "cnn": Workload(
            "digits LeNet-5 (8x8, 'same')",
            "lenet",
            {"in_channels": 1, "input_size": 8, "num_classes": 10},
            digits,
            train_epochs=30,
        ),
        "resnet": Workload(
            "CIFAR-shaped ResNet-20 (random data, 2 epochs)",
            "resnet",
            {"depth": 20, "in_channels": 3, "input_size": 32, "num_classes": 10},
            cifar_like,
            train_epochs=2,
            overrides=resnet,
            margin_samples=128,
        ),
    }


def run_workload(w: Workload, tmp: Path) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    init = build_model(w.arch, w.config)
    init_path = tmp / f"{w.arch}-init.pt"
    torch.save(init.state_dict(), init_path)
    model = _train(copy.deepcopy(init), w.data, w.train_epochs, seed=0)
    torch.manual_seed(1)
    other = _train(build_model(w.arch, w.config), w.data, w.train_epochs, seed=1)
    other_path = tmp / f"{w.arch}-other.pt"
    torch.save(other.state_dict(), other_path)
    loaded = LoadedModel(model, "state_dict", sha256="bench", arch=w.arch, arch_config=w.config)
    options = AnalysisOptions(seed=0, margin_samples=w.margin_samples)
    rows = []
    for m in MEASURES:
        params = dict(w.overrides.get(m, {}))
        if m == "landscape.interpolate":
            params["other"] = str(other_path)
        if m in ("complexity.distance_from_init",):
            params["init"] = str(init_path)
        start = time.perf_counter()
        report = analyze(loaded, w.data, [m], params={m: params}, options=options)
        wall = time.perf_counter() - start
        result = report.measures[m]
        shown = {k: v for k, v in params.items() if k not in ("other", "init")}
        rows.append(
            {
                "workload": w.name,
                "measure": m,
                "params": shown,
                "seconds": result.seconds,
                "wall": wall,
                "value": result.value,
                "status": result.status if result.status == "ok" else result.error["code"],
                "reason": result.details.get("reason") if result.value is None else None,
            }
        )
        value = "—" if result.value is None else f"{result.value:.4g}"
        print(f"{w.name:40s} {m:34s} {result.seconds:8.2f}s  {value:>12s}  {rows[-1]['status']}")
    return rows


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str, total: float) -> None:
    lines = [
        "# Sharpness, landscape, complexity and bound measures: timings",
        "",
        f"Command: `{command}`  ",
        f"Machine: 2-core CPU ({platform.machine()}, {os.cpu_count()} logical CPUs), shared with "
        f"other jobs (load average at the end: {os.getloadavg()[0]:.1f}), so timings are noisy.  ",
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op thread(s)), "
        f"Python {platform.python_version()}, float32, seed 0.  ",
        f"Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"total {total:.0f} s.",
        "",
        "Seconds = the measure's own time as its report records it; each measure runs in an "
        "analysis of its own, so nothing comes from another measure's cache. Empty params = "
        "the measure's defaults (sharpness: 1024 training examples in batches of 128, 20 "
        "ascent steps; pacbayes: depth 15, 10 draws; slices 41 / 21x21 points). The ResNet's "
        "all-layer margins use `--margin-samples 128`. Single-threaded torch: on this loaded "
        "machine two intra-op threads made the same measures 10-50x slower.",
        "",
        "| workload | measure | params | seconds | value | status |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        value = "—" if r["value"] is None else f"{r['value']:.4g}"
        status = r["status"] + (f" ({r['reason']})" if r.get("reason") else "")
        lines.append(
            f"| {r['workload']} | `{r['measure']}` | {params} | {r['seconds']:.2f} | {value} | "
            f"{status} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="mlp,cnn,resnet")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-sharpness.md"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = workloads()
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in chosen]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(chosen)}")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += run_workload(chosen[name], Path(tmp))
    total = time.perf_counter() - start
    command = (
        "python bench/sharpness.py"
        + (f" --workloads {args.workloads}" if args.workloads != "mlp,cnn,resnet" else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
    )
    write_markdown(rows, Path(args.out), command, total)
    print(f"wrote {args.out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
