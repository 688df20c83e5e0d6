"""All-layer margin benchmark: the whole digits training set, examples per second, and the gap to
a slow, strong reference solver.

Workloads: the digits MLP 64-256-256-10 and LeNet-5 on 8x8 digits (two convolutions, the zoo's
``lenet``), each trained briefly with full-batch Adam (seeded) to 100% training accuracy.
GenScope's solver (``genscope.all_layer.solve_all_layer``, defaults) runs on all 1437
training examples in float32; the reference (bisection on the radius + targeted projected
gradient descent with restarts, ``tests/engine/test_margins.py::reference_all_layer``) runs on
the first ``--ref-examples`` examples, and the medians over those examples are compared. The
wall time of the full ``margin.*`` measures through ``genscope.analyze`` is listed too.

    python bench/margins.py                      # writes bench/RESULTS-margins.md
    python bench/margins.py --ref-examples 10 --repeats 1 --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from genscope import analyze  # noqa: E402
from genscope.all_layer import perturbed_forward, solve_all_layer  # noqa: E402
from genscope.graph import layer_graph  # noqa: E402
from genscope.io.datasets import load_dataset  # noqa: E402
from genscope.io.zoo import build_model  # noqa: E402
from genscope.measures.context import AnalysisOptions  # noqa: E402
from tests.engine.test_margins import reference_all_layer  # noqa: E402

WORKLOADS = {
    "mlp": ("mlp", {"input_dim": 64, "widths": [256, 256], "num_classes": 10}, 300, 5.0),
    "cnn": ("lenet", {"in_channels": 1, "input_size": 8, "num_classes": 10}, 200, 20.0),
}


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def run(name: str, repeats: int, ref_examples: int, measures: bool) -> dict[str, Any]:
    arch, config, steps, target = WORKLOADS[name]
    data = load_dataset("digits")
    x, y = data.x_train, data.y_train
    torch.manual_seed(0)
    model = train(build_model(arch, config), x, y, steps)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).double().mean())
    graph = layer_graph(model, x[:1])
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve_all_layer(graph, x, y)
        times.append(time.perf_counter() - start)
    assert result is not None
    row: dict[str, Any] = {
        "workload": name,
        "params": sum(p.numel() for p in model.parameters()),
        "points": len(graph.layers),
        "train_accuracy": accuracy,
        "n": int(x.shape[0]),
        "seconds": min(times),
        "seconds_all": times,
        "target": target,
        "median": float(result.values.median()),
        "unconfirmed": result.unconfirmed,
        "iterations_mean": float(result.iterations[result.correct].double().mean()),
        "loads": [round(float(v), 3) for v in result.shares[result.correct].mean(0)],
    }
    row["examples_per_s"] = row["n"] / row["seconds"]
    if ref_examples > 0:
        k = ref_examples
        shapes = [layer.output_shape for layer in graph.layers]
        start = time.perf_counter()
        ref = reference_all_layer(perturbed_forward(graph), x[:k], y[:k], shapes)
        row["ref_seconds"] = time.perf_counter() - start
        ok = result.correct[:k]
        fast_med = float(result.values[:k][ok].median())
        ref_med = float(ref[ok].median())
        ratio = result.values[:k][ok] / ref[ok]
        row.update(
            ref_examples=k,
            ref_median=ref_med,
            fast_median_on_ref=fast_med,
            median_gap=(fast_med - ref_med) / ref_med,
            ratio_min=float(ratio.min()),
            ratio_max=float(ratio.max()),
        )
    if measures:
        opts = AnalysisOptions(seed=0)
        report = analyze(model, data, ["margins"], options=opts)
        row["measure_seconds"] = {k: round(r.seconds, 2) for k, r in report.measures.items()}
    return row


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# All-layer margin benchmark (digits)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, float32, "
        f"best of {args.repeats}. The machine is shared with other jobs: times are noisy "
        "(the spread of the repeats is listed).",
        "",
        "| workload | params | points | n | seconds (best; all) | target | examples/s "
        "| median m_F | unconfirmed | mean iterations |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        spread = ", ".join(f"{t:.2f}" for t in r["seconds_all"])
        lines.append(
            f"| {r['workload']} | {r['params']} | {r['points']} | {r['n']} | {r['seconds']:.2f} "
            f"({spread}) | ≤ {r['target']:.0f} s | {r['examples_per_s']:.0f} | "
            f"{r['median']:.4f} | {r['unconfirmed']} | {r['iterations_mean']:.1f} |"
        )
    if any("ref_median" in r for r in rows):
        lines += [
            "",
            "Against the reference solver (bisection on the radius, 14 steps; targeted PGD, "
            "60 steps, zero start + 3 random restarts per wrong class) on the first "
            f"{args.ref_examples} training examples:",
            "",
            "| workload | reference seconds | reference median | fast median | median gap "
            "| per-example ratio fast/ref (min, max) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            if "ref_median" in r:
                lines.append(
                    f"| {r['workload']} | {r['ref_seconds']:.0f} | {r['ref_median']:.4f} | "
                    f"{r['fast_median_on_ref']:.4f} | {100 * r['median_gap']:+.2f}% | "
                    f"{r['ratio_min']:.4f}, {r['ratio_max']:.4f} |"
                )
    lines += ["", "Mean share of ‖δ‖² per perturbation point (correctly classified examples):", ""]
    for r in rows:
        lines.append(f"- {r['workload']}: {r['loads']}")
    if any("measure_seconds" in r for r in rows):
        lines += ["", "Wall time of each `margin.*` measure through `genscope.analyze`:", ""]
        for r in rows:
            if "measure_seconds" in r:
                lines.append(f"- {r['workload']}: {r['measure_seconds']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="mlp,cnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-examples", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-measures", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-margins.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.workloads.split(","):
        row = run(name.strip(), args.repeats, args.ref_examples, not args.no_measures)
        print(row, flush=True)
        rows.append(row)
    text = render(rows, args)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
