"""Which measure predicts the generalization gap? A reproducible study on digits.

Trains a grid of small ReLU MLPs on scikit-learn's 8x8 digits (widths × label noise × weight
decay × seeds), analyses each with ``genscope.analyze`` over the measure groups that exist
(margins, hessian, sharpness, bounds, representation), runs :func:`genscope.study.study` over the
reports and prints the ranking; writes the table to ``bench/RESULTS-study.md``.

    python bench/study_digits.py                 # the full grid (2 x 3 x 2 x 2 = 24 models)
    python bench/study_digits.py --seeds 0       # one seed: 12 models

Training: SGD with momentum 0.9, learning rate 0.05, batch 128, weight decay as labelled, until
the cross-entropy on the (noisy) training labels is <= 0.01 (the stopping rule of Jiang et al.
2020) or 600 epochs (narrow nets with label noise and weight decay may stop short of it; the
results list every run's final training error). Label noise p: a seeded p-fraction of training
labels replaced by labels drawn uniformly from the 10 classes (Zhang et al. 2017); test labels
are clean. The gap of a run is its test error minus its error on the labels it was trained on.
Torch runs on one thread: on a small shared machine that is many times faster than two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genscope.analysis import analyze  # noqa: E402
from genscope.io.checkpoints import LoadedModel  # noqa: E402
from genscope.io.datasets import Dataset, from_arrays, load_dataset  # noqa: E402
from genscope.io.zoo import build_model  # noqa: E402
from genscope.measures.context import AnalysisOptions  # noqa: E402
from genscope.measures.registry import GROUPS, all_measures  # noqa: E402
from genscope.study import study  # noqa: E402

MARKER = "<!-- findings: kept when the bench rewrites this file -->"
WIDTHS = (64, 256)
NOISES = (0.0, 0.25, 0.5)
DECAYS = (0.0, 5e-4)
WANTED_GROUPS = ("margins", "hessian", "sharpness", "bounds", "representation")
# non-scalar (value None) and the slowest: spectral densities and the 2-D landscape
LEFT_OUT = {
    "hessian.density": "a density, no scalar value; ~20-70 s per model",
    "ggn.density": "a density, no scalar value; ~20-70 s per model",
    "landscape.slice_2d": "a 2-D surface; the 1-D slice is kept",
}


def noisy_labels(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A seeded ``fraction`` of the labels replaced by uniform draws over the 10 classes."""
    gen = torch.Generator().manual_seed(10_000 + seed * 100 + round(fraction * 100))
    y = y.clone()
    k = round(fraction * y.numel())
    idx = torch.randperm(y.numel(), generator=gen)[:k]
    y[idx] = torch.randint(0, 10, (k,), generator=gen)
    return y


def train(
    data: Dataset, width: int, decay: float, seed: int, max_epochs: int = 600
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """An MLP 64-width-10 trained by SGD; returns it, its initial state and training facts."""
    torch.manual_seed(seed)
    config = {"input_dim": 64, "widths": [width], "num_classes": 10}
    model = build_model("mlp", config)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=decay)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    loss = math.inf
    epoch = 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007
        model.train()
        perm = torch.randperm(y.numel(), generator=gen)
        for i in range(0, y.numel(), 128):
            idx = perm[i : i + 128]
            batch_loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y))
        if loss <= 0.01:
            break
    return model.eval(), init, {"epochs": epoch, "train_ce": loss, "config": config}


def measure_ids() -> tuple[list[str], list[str]]:
    """The measures of the wanted groups that exist now, and the groups that do not exist."""
    missing = [g for g in WANTED_GROUPS if g not in GROUPS]
    ids = [m.id for m in all_measures() if m.group in WANTED_GROUPS and m.id not in LEFT_OUT]
    missing += [
        g for g in WANTED_GROUPS if g in GROUPS and not any(m.group == g for m in all_measures())
    ]
    return ids, missing


def run_grid(seeds: list[int], out_dir: Path) -> tuple[list[dict], list[dict], list[dict]]:
    base = load_dataset("digits")
    ids, missing = measure_ids()
    if missing:
        print(f"groups without measures (skipped): {', '.join(missing)}")
    reports, labels, facts = [], [], []
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = [(w, p, d, s) for w in WIDTHS for p in NOISES for d in DECAYS for s in seeds]
    for k, (width, noise, decay, seed) in enumerate(grid, start=1):
        name = f"w{width}_noise{noise}_wd{decay:g}_s{seed}"
        y_noisy = noisy_labels(base.y_train, noise, seed)
        data = from_arrays(
            f"digits-noise{noise}", base.x_train, y_noisy, base.x_test, base.y_test, 10
        )
        t0 = time.perf_counter()
        model, init, fact = train(data, width, decay, seed)
        t1 = time.perf_counter()
        init_path = out_dir / f"{name}.init.pt"
        torch.save(init, init_path)
        loaded = LoadedModel(model, "module", sha256=name, arch="mlp", arch_config=fact["config"])
        params: dict[str, dict[str, Any]] = {}
        for mid, key in (
            ("complexity.distance_from_init", "init"),
            ("bound.pacbayes_sharpness", "init"),
            ("landscape.interpolate", "other"),
        ):
            if mid in ids:
                params.setdefault(mid, {})[key] = str(init_path)
        options = AnalysisOptions(seed=0)  # default samples: Hessian 1000, margins whole set
        report = analyze(loaded, data, ids, params=params, options=options).to_dict()
        report["model"]["name"] = name
        t2 = time.perf_counter()
        (out_dir / f"{name}.report.json").write_text(json.dumps(report), encoding="utf-8")
        gap = report["metrics"]["generalization_gap"]
        print(
            f"[{k}/{len(grid)}] {name}: {fact['epochs']} epochs, train CE {fact['train_ce']:.3f}, "
            f"gap {gap:.3f}; train {t1 - t0:.1f}s, analyse {t2 - t1:.1f}s",
            flush=True,
        )
        reports.append(report)
        labels.append({"width": width, "label_noise": noise, "weight_decay": decay})
        facts.append({"name": name, **fact, "train_s": t1 - t0, "analyse_s": t2 - t1})
    return reports, labels, facts


def _f(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:+.{digits}f}"


def markdown(
    result: dict, facts: list[dict], reports: list[dict], command: str, wall: float
) -> str:
    hps = result["hyperparameters"]
    lines = [
        "# Study: which measure predicts the generalization gap (digits MLP grid)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs, timings noisy), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, no GPU. Wall time {wall / 60:.1f} min for "
        f"{len(facts)} models (training + analysis + study).",
        "",
        "Grid: widths {64, 256} × label noise {0, 0.25, 0.5} × weight decay {0, 5e-4} × seeds; "
        "one hidden ReLU layer; gap = test error − error on the (noisy) training labels. "
        f"Gaps range from {min(r['metrics']['generalization_gap'] for r in reports):.3f} to "
        f"{max(r['metrics']['generalization_gap'] for r in reports):.3f}.",
        "",
        "τ adj. = Kendall τ-a signed by the measure's declared direction (positive: the measure "
        "orders the runs by gap as it claims); measures without a direction are ranked by |τ| "
        "(dir. ·, |τ| shown in parentheses; their CI, ψ and Ψ are raw, unsigned by any "
        "direction). CI: 95% bootstrap over runs (1000 resamples). ψ: granulated Kendall per "
        "hyper-parameter (sign-adjusted), Ψ their mean. CMI: min over conditioning sets "
        "|S| ≤ 2 (Jiang et al. 2020 §4).",
        "",
        "| # | measure | dir. | τ adj. | 95% CI | τ | "
        + " | ".join(f"ψ {h}" for h in hps)
        + " | Ψ | CMI |",
        "|---|---|---|---|---|---|" + "---|" * len(hps) + "---|---|",
    ]
    for e in result["measures"]:
        directed = e["tau_adjusted"] is not None
        gran = e.get("granulated") or {}
        psi = (gran.get("psi_adjusted") if directed else gran.get("psi")) or {}
        big_psi = gran.get("Psi_adjusted") if directed else gran.get("Psi")
        ci = e["ci_adjusted"] if directed else e["ci"]
        direction = {"lower_is_better": "↓", "higher_is_better": "↑"}.get(e["direction"], "·")
        lines.append(
            f"| {e['rank']} | `{e['id']}` | {direction} | "
            f"{_f(e['tau_adjusted']) if directed else '(' + _f(abs(e['tau'])) + ')'} | "
            f"[{_f(ci[0])}, {_f(ci[1])}] | {_f(e['tau'])} | "
            + " | ".join(_f(psi.get(h)) for h in hps)
            + f" | {_f(big_psi)} | {_f((e.get('cmi') or {}).get('score'), 3)} |"
        )
    lines += [
        "",
        "Runs (train error on the labels trained on, noisy ones included):",
        "",
        "| run | epochs | train CE | train err | test err | gap | train s | analyse s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f, r in zip(facts, reports, strict=True):
        m = r["metrics"]
        lines.append(
            f"| {f['name']} | {f['epochs']} | {f['train_ce']:.3f} | {m['train_error']:.3f} | "
            f"{m['test_error']:.3f} | {m['generalization_gap']:.3f} | {f['train_s']:.1f} | "
            f"{f['analyse_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/genscope-study-digits"))
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS-study.md")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    reports, labels, facts = run_grid(args.seeds, args.out_dir)
    result = study(reports, labels, names=[f["name"] for f in facts])
    (args.out_dir / "study.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    wall = time.perf_counter() - start
    command = "python bench/study_digits.py " + " ".join(sys.argv[1:])
    text = markdown(result, facts, reports, command.strip(), wall)
    failed = sorted(
        {
            f"`{mid}` ({res.get('error', {}).get('message', '')[:90]})"
            for r in reports
            for mid, res in r["measures"].items()
            if res.get("status") == "failed"
        }
    )
    text += "\nLeft out of the analysis: " + "; ".join(f"`{k}` ({v})" for k, v in LEFT_OUT.items())
    text += ".\n\nFailed in some runs: " + ("; ".join(failed) or "none") + ".\n"
    skipped = [f"`{s['id']}` ({s['reason']})" for s in result["skipped"]]
    text += "\nNot ranked: " + ("; ".join(skipped) or "none") + ".\n"
    print(text)
    if args.results.exists():  # keep the hand-written findings below the marker
        previous = args.results.read_text(encoding="utf-8")
        if MARKER in previous:
            text += "\n" + previous[previous.index(MARKER) :]
    args.results.write_text(text, encoding="utf-8")
    print(f"written {args.results} and {args.out_dir / 'study.json'}")


if __name__ == "__main__":
    main()
