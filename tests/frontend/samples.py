"""Synthetic reports for the dashboard tests: every measure the dashboard draws, with the
detail keys of interfaces.md §3 and measures.md, built from seeded numpy draws (no torch)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

REAL_SAMPLE = Path(__file__).with_name("data") / "digits_mlp.report.json"


def _quantiles(v: np.ndarray) -> dict[str, float]:
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
    return dict(zip(("p10", "p25", "p50", "p75", "p90"), map(float, q), strict=True))


def full_report(seed: int = 0, n: int = 1500, num_classes: int = 10, scale: float = 1.0) -> dict:
    """A report with every figure's inputs; ``scale`` shifts the margins (a "better" model)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    out = rng.normal(1.0 * scale, 1.2, size=n)
    all_layer = np.clip(out * 0.02 + rng.normal(0, 0.003, size=n), 0, None)
    normalized = out / 40.0
    per_class = []
    for c in range(num_classes):
        sel = out[labels == c]
        per_class.append(
            {"class": c, "count": int(sel.size), "mean": float(sel.mean()), **_quantiles(sel)}
        )
    test_acc = float(np.clip(0.80 + 0.05 * scale + rng.normal(0, 0.01), 0, 1))
    train_acc = float(np.clip(0.97 + rng.normal(0, 0.005), 0, 1))
    eig = np.sort(rng.uniform(1, 50, size=5) * scale)[::-1]
    grid = np.linspace(-2, 60 * scale, 1000)
    density = np.exp(-(grid**2) / 0.5) + 1e-6 * np.exp(-((grid - eig[0]) ** 2))
    rhos = [0.01, 0.02, 0.05, 0.1, 0.2]
    ax = np.linspace(-1, 1, 41)
    bx = np.linspace(-1, 1, 21)
    loss2d = [[float(0.1 + 2 * a * a + b * b) for a in bx] for b in bx]
    return {
        "schema": "genscope.report/1",
        "model": {
            "format": "safetensors",
            "sha256": "ab" * 32,
            "num_params": 2410,
            "arch": "mlp",
            "layers": [
                {"name": "fc1", "kind": "linear", "shape": [32, 64]},
                {"name": "fc2", "kind": "linear", "shape": [10, 32]},
            ],
        },
        "data": {
            "name": "digits",
            "sha256": "cd" * 32,
            "n_train": n,
            "n_test": 360,
            "num_classes": num_classes,
        },
        "metrics": {
            "train_loss": 0.1,
            "train_accuracy": train_acc,
            "test_loss": 0.5,
            "test_accuracy": test_acc,
            "generalization_gap": train_acc - test_acc,
        },
        "settings": {"seed": seed},
        "measures": {
            "margin.output": {
                "value": float(np.median(out)),
                "params": {},
                "seconds": 0.01,
                "status": "ok",
                "direction": "higher_is_better",
                "values": out.tolist(),
                "quantiles": _quantiles(out),
                "per_class": per_class,
            },
            "margin.all_layer": {
                "value": float(np.median(all_layer)),
                "params": {},
                "seconds": 1.0,
                "status": "ok",
                "direction": "higher_is_better",
                "values": all_layer.tolist(),
                "quantiles": _quantiles(all_layer),
                "points": ["fc1", "fc2"],
                "layer_shares": {"fc1": 0.7, "fc2": 0.3},
            },
            "margin.normalized": {
                "value": float(np.median(normalized)),
                "params": {},
                "seconds": 0.1,
                "status": "ok",
                "direction": "higher_is_better",
                "values": normalized.tolist(),
                "quantiles": _quantiles(normalized),
            },
            "margin.hidden": {
                "value": -0.2,
                "params": {},
                "seconds": 0.5,
                "status": "ok",
                "direction": "higher_is_better",
                "layers": [
                    {
                        "point": name,
                        "signature": {
                            "q1": -0.5 + k,
                            "q2": -0.2 + k,
                            "q3": 0.1 + k,
                            "lower_fence": -1.0 + k,
                            "upper_fence": 0.6 + k,
                        },
                    }
                    for k, name in ((0.0, "input"), (0.1, "fc1"), (0.3, "fc2"))
                ],
            },
            "margin.robust": {
                "value": 0.3,
                "params": {},
                "seconds": 2.0,
                "status": "ok",
                "direction": "higher_is_better",
                "robust_accuracy": [
                    {"eps": e, "l2": max(0.0, 0.9 - e), "linf": max(0.0, 0.9 - 3 * e)}
                    for e in (0.0, 0.1, 0.2, 0.3)
                ],
            },
            "hessian.top_eigenvalues": {
                "value": float(eig[0]),
                "params": {"k": 5},
                "seconds": 2,
                "status": "ok",
                "direction": "lower_is_better",
                "values": eig.tolist(),
                "num_hvp": 60,
                "residuals": [1e-4] * 5,
            },
            "hessian.trace": {
                "value": float(eig.sum() * 3),
                "params": {},
                "seconds": 1,
                "status": "ok",
                "direction": "lower_is_better",
                "stderr": 0.5,
            },
            "hessian.density": {
                "value": None,
                "params": {},
                "seconds": 3,
                "status": "ok",
                "grid": grid.tolist(),
                "density": density.tolist(),
                "outliers": [float(eig[0]), float(eig[1])],
                "num_hvp": 320,
            },
            "hessian.layer_spectra": {
                "value": None,
                "params": {},
                "seconds": 1,
                "status": "ok",
                "layers": [
                    {"name": "fc1", "top_eigenvalue": float(eig[0]), "trace": 20.0},
                    {"name": "fc2", "top_eigenvalue": 3.0, "trace": 7.0},
                ],
            },
            "sharpness.sam": {
                "value": 0.02 * scale,
                "params": {"rho": 0.05},
                "seconds": 1,
                "status": "ok",
                "direction": "lower_is_better",
                "curve": {"rho": rhos, "value": [r * r * 4 * scale for r in rhos]},
            },
            "sharpness.adaptive_worst": {
                "value": 0.3 / scale,
                "params": {"rho": 0.001},
                "seconds": 1,
                "status": "ok",
                "direction": "lower_is_better",
            },
            "sharpness.pacbayes_flatness": {
                "value": 25.0 * scale,
                "params": {},
                "seconds": 1,
                "status": "ok",
                "direction": "lower_is_better",
                "sigma": 0.2 / scale,
                "clean_accuracy": train_acc,
                "evaluations": [
                    {"sigma": 1.0, "accuracy": 0.1, "stderr": 0.01},
                    {"sigma": 0.5, "accuracy": 0.5, "stderr": 0.02},
                    {"sigma": 0.25, "accuracy": 0.85, "stderr": 0.02},
                ],
            },
            "ntk.spectrum": {
                "value": 40.0,
                "params": {},
                "seconds": 1,
                "status": "ok",
                "eigenvalues": np.sort(rng.exponential(2.0, size=64)).tolist(),
            },
            "complexity.spectral": {
                "value": 3.5,
                "params": {},
                "seconds": 0.1,
                "status": "ok",
                "direction": "lower_is_better",
                "layers": [
                    {"name": "fc1", "spectral": 2.0, "frobenius": 5.0},
                    {"name": "fc2", "spectral": 1.5, "frobenius": 3.0},
                ],
            },
            "landscape.slice_1d": {
                "value": None,
                "params": {},
                "seconds": 1,
                "status": "ok",
                "alphas": ax.tolist(),
                "loss": (0.1 + 3 * ax**2).tolist(),
            },
            "landscape.slice_2d": {
                "value": None,
                "params": {},
                "seconds": 1,
                "status": "ok",
                "coordinates": {"x": bx.tolist(), "y": bx.tolist()},
                "loss": loss2d,
            },
            "bound.spectral": {
                "value": 350.0 / scale,
                "params": {},
                "seconds": 0.1,
                "status": "ok",
                "direction": "lower_is_better",
                "vacuous": True,
                "rigorous": False,
                "terms": {"empirical_margin_loss": 0.05, "complexity": 349.9, "confidence": 0.04},
            },
            "bound.pacbayes_sharpness": {
                "value": 0.6,
                "params": {},
                "seconds": 0.1,
                "status": "ok",
                "direction": "lower_is_better",
                "vacuous": False,
                "informative": True,
                "informative_below": 0.9,
                "rigorous": True,
                "terms": {"kl": 120.5, "empirical_error": 0.05},
            },
            "complexity.failed": {
                "value": None,
                "params": {},
                "seconds": 0.0,
                "status": "failed",
                "error": {"code": "failed", "message": "it broke"},
            },
        },
    }


def real_report() -> dict[str, Any]:
    """The engine's own report (``all`` measures) of a small untrained MLP on digits."""
    return json.loads(REAL_SAMPLE.read_text(encoding="utf-8"))


def named_runs(k: int = 3) -> list[dict[str, Any]]:
    """``k`` runs with distinct reports, as the compare page receives them."""
    return [
        {
            "id": f"r{i}",
            "name": f"run {i}",
            "status": "succeeded",
            "report": full_report(seed=i, scale=1.0 + 0.3 * i),
        }
        for i in range(k)
    ]


def stripped(report: dict, *drop: str) -> dict:
    """A copy of ``report`` without the given measures."""
    out = copy.deepcopy(report)
    for mid in drop:
        out["measures"].pop(mid, None)
    return out
