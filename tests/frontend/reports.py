"""Real engine reports for the dashboard tests: tiny zoo MLPs trained for a few full-batch
steps on digits and moons, analysed by :func:`genscope.analyze` with small samples.

:func:`engine_reports` generates them once into a folder (the session's pytest tmp dir, see
``tests/frontend/conftest.py``) and reads them back from there: the tests see the JSON the
service stores, not Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Every measure a run-page figure or table draws from, with parameters that keep the whole
#: analysis of a 2-16-2 MLP on moons to seconds.
FIGURE_MEASURES: dict[str, dict[str, Any]] = {
    "margin.output": {},
    "margin.all_layer": {"max_iter": 30},
    "margin.normalized": {},
    "margin.hidden": {},
    "margin.robust": {
        "eps": "0.03,0.1,0.3",
        "linf_steps": 5,
        "linf_depth": 4,
        "max_iter": 20,
        "all_layer": False,
    },
    "hessian.top_eigenvalues": {"k": 3, "max_hvp": 200},
    "ggn.top_eigenvalues": {"k": 3, "max_hvp": 200},
    "hessian.min_eigenvalue": {"max_hvp": 200},
    "hessian.density": {"steps": 20, "probes": 2, "grid_points": 200},
    "ggn.density": {"steps": 20, "probes": 2, "grid_points": 200},
    "hessian.layer_spectra": {"trace_hvp": 12, "max_hvp": 200},
    "hessian.trace": {"num_hvp": 12},
    "ntk.spectrum": {"samples": 64},
    "sharpness.sam": {"steps": 3, "samples": 256},
    "sharpness.adaptive_worst": {"steps": 3, "samples": 256},
    "sharpness.adaptive_average": {"draws": 2, "samples": 256},
    "sharpness.keskar": {"steps": 3, "samples": 256},
    "sharpness.pacbayes_flatness": {"draws": 2, "max_draws": 4, "depth": 4, "samples": 256},
    "sharpness.pacbayes_mag_flatness": {"draws": 2, "max_draws": 4, "depth": 4, "samples": 256},
    "landscape.slice_1d": {"points": 11, "samples": 256},
    "landscape.slice_2d": {"points": 7, "samples": 256},
    "landscape.interpolate": {"points": 5, "samples": 256},
    "complexity.spectral": {},
    "complexity.frobenius": {},
    "complexity.path_norm": {},
    "bound.spectral": {},
    "bound.pacbayes_spectral": {},
    "bound.pacbayes_sharpness": {"draws": 2, "max_draws": 4, "depth": 4, "mc_draws": 4},
}

#: Ten classes: per-class margins, the all-layer margin against the output margin, a bound.
DIGITS_MEASURES: dict[str, dict[str, Any]] = {
    "margin.output": {},
    "margin.all_layer": {"max_iter": 30},
    "margin.normalized": {},
    "hessian.top_eigenvalues": {"k": 3, "max_hvp": 120},
    "sharpness.sam": {"steps": 2, "samples": 128},
    "complexity.spectral": {},
    "bound.spectral": {},
}

#: The cheap measures of the runs of a comparison (margins, a curvature, a sharpness, bounds).
COMPARE_MEASURES: dict[str, dict[str, Any]] = {
    "margin.output": {},
    "margin.normalized": {},
    "hessian.top_eigenvalues": {"k": 3, "max_hvp": 120},
    "hessian.density": {"steps": 12, "probes": 1, "grid_points": 200},
    "sharpness.sam": {"steps": 2, "samples": 128},
    "complexity.spectral": {},
    "complexity.path_norm": {},
    "bound.spectral": {},
}


@dataclass(frozen=True)
class Recipe:
    """How one report is made: a zoo MLP, its training and the measures run on it."""

    dataset: str
    widths: tuple[int, ...]
    steps: int
    measures: Mapping[str, Mapping[str, Any]]
    seed: int = 0
    label_noise: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


#: The reports the dashboard tests use, by name.
RECIPES: dict[str, Recipe] = {
    "moons_mlp": Recipe("moons", (16,), 300, FIGURE_MEASURES, seed=1),
    "digits_mlp": Recipe("digits", (32,), 150, DIGITS_MEASURES),
    **{
        f"moons_family_{k}": Recipe(
            "moons", (width,), steps, COMPARE_MEASURES, seed=10 + k, label_noise=noise
        )
        for k, (width, steps, noise) in enumerate(
            ((8, 10, 0.0), (16, 40, 0.2), (32, 80, 0.0), (64, 150, 0.4))
        )
    },
}


def _train(recipe: Recipe, folder: Path, name: str) -> tuple[Path, Path, dict[str, Any]]:
    """Train the recipe's MLP (Adam, full batch, optional label noise) and save it as
    safetensors, with its weights halfway through training beside it."""
    import torch
    from safetensors.torch import save_file

    from genscope.io.datasets import load_dataset
    from genscope.io.zoo import build_model

    data = load_dataset(recipe.dataset)
    x, y = data.x_train.flatten(1), data.y_train.clone()
    gen = torch.Generator().manual_seed(recipe.seed)
    flip = torch.rand(len(y), generator=gen) < recipe.label_noise
    y[flip] = torch.randint(0, data.num_classes, (int(flip.sum()),), generator=gen)
    config = {
        "input_dim": x.shape[1],
        "widths": list(recipe.widths),
        "num_classes": data.num_classes,
    }
    torch.manual_seed(recipe.seed)
    model = build_model("mlp", config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    halfway = folder / f"{name}.halfway.safetensors"
    for step in range(recipe.steps):
        if step == recipe.steps // 2:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, halfway)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = folder / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    return path, halfway, config


def generate(name: str, folder: Path) -> dict[str, Any]:
    """Train and analyse the recipe ``name``; its report as stored (JSON-decoded). One torch
    thread: fastest for tiny models, and steady on a busy machine."""
    import torch

    import genscope
    from genscope.measures.context import AnalysisOptions

    recipe = RECIPES[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path, halfway, config = _train(recipe, folder, name)
        params = {mid: dict(p) for mid, p in recipe.measures.items()}
        if "landscape.interpolate" in params:
            params["landscape.interpolate"]["other"] = str(halfway)
        options = AnalysisOptions(
            seed=recipe.seed, hessian_samples=128, margin_samples=10_000, **recipe.options
        )
        report = genscope.analyze(
            path, recipe.dataset, list(params), params, options, arch="mlp", arch_config=config
        )
    finally:
        torch.set_num_threads(threads)
    return json.loads(report.to_json())


def engine_reports(folder: Path, names: tuple[str, ...] = tuple(RECIPES)) -> dict[str, dict]:
    """The reports ``names``, generated into ``folder`` on first use and read back from it."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        cached = folder / f"{name}.report.json"
        if not cached.exists():
            cached.write_text(json.dumps(generate(name, folder)), encoding="utf-8")
        out[name] = json.loads(cached.read_text(encoding="utf-8"))
    return out
