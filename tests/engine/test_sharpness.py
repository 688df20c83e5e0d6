"""Sharpness and input smoothness: closed forms, invariances, determinism, ordering."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from genscope import analyze
from genscope.errors import BadParameter
from genscope.io.datasets import Dataset, from_arrays, load_dataset
from genscope.measures.context import AnalysisOptions
from genscope.measures.sharpness import search_sigma, sequential_mean
from genscope.perturb import (
    FlatParams,
    Objective,
    apgd_checkpoints,
    average_case,
    sigma_search,
    worst_case,
)
from tests.cases import relu_mlp
from tests.references import assert_close

F64 = AnalysisOptions(dtype="float64")


# --- a linear model under squared loss: closed forms --------------------------------------------


def _quadratic(h: torch.Tensor, seed: int = 0, at_minimum: bool = False):
    """L(w) = ‖Xw − y‖²/(2n) with XᵀX/n = diag(h): gradient g = diag(h)(w − w*), Hessian diag(h)."""
    d = h.numel()
    n = 4 * d
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))
    x = q * torch.sqrt(n * h)[None, :]
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    w_star = w.clone() if at_minimum else torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w_star

    def forward(params, inputs):
        return inputs @ params["w"]

    def squared(out, target):
        return 0.5 * ((out - target) ** 2).mean()

    flat = FlatParams({"w": w})
    objective = Objective(forward, flat, [(x, y)], squared)
    g = h * (w - w_star)
    return objective, w.clone(), g


def _trust_region_max(g: torch.Tensor, h: torch.Tensor, rho: float) -> float:
    """max_{‖ε‖≤ρ} gᵀε + ½ εᵀ diag(h) ε (boundary solution ε = g/(μ − h), bisection on μ)."""
    lo, hi = float(h.max()) + 1e-12, float(h.max()) + float(g.norm()) / rho + 1.0
    for _ in range(200):
        mu = (lo + hi) / 2
        if float((g / (mu - h)).norm()) > rho:
            lo = mu
        else:
            hi = mu
    eps = g / (hi - h)
    return float(g @ eps + 0.5 * (h * eps**2).sum())


def test_sam_isotropic_closed_form():
    """H = cI: max_{‖ε‖≤ρ} L(w+ε) − L(w) = ρ‖g‖ + cρ²/2, reached by SAM's first step."""
    h = torch.full((6,), 0.7, dtype=torch.float64)
    objective, w, g = _quadratic(h)
    rho = 0.3
    expected = rho * float(g.norm()) + 0.7 * rho**2 / 2
    for steps in (1, 20):
        res = worst_case(objective, w, None, rho, "l2", steps)
        assert_close(res.increase, expected, rtol=1e-10, what=f"SAM sharpness, {steps} steps")
        assert res.num_grad == steps
    assert float(res.z.norm()) <= rho * (1 + 1e-12)


def test_sam_anisotropic_matches_trust_region():
    h = torch.tensor([3.0, 1.0, 0.5, 0.2, 0.05], dtype=torch.float64)
    objective, w, g = _quadratic(h, seed=1)
    rho = 0.8
    res = worst_case(objective, w, None, rho, "l2", steps=60)
    assert_close(res.increase, _trust_region_max(g, h, rho), rtol=1e-4, what="SAM vs TR")


def test_adaptive_linf_closed_form():
    """Box |δ_i| ≤ ρ|w_i|, diagonal H: Σ_i |g_i| ρ|w_i| + ½ h_i ρ² w_i²."""
    h = torch.tensor([2.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    objective, w, g = _quadratic(h, seed=2)
    rho = 0.05
    c = w.abs()
    expected = float((g.abs() * rho * c + 0.5 * h * (rho * c) ** 2).sum())
    res = worst_case(objective, w, c, rho, "linf", steps=20)
    assert_close(res.increase, expected, rtol=1e-10, what="adaptive ℓ∞ sharpness")


def test_keskar_box_closed_form():
    """Keskar's box ε(|w|+1), same separable maximum."""
    h = torch.tensor([1.5, 0.4, 0.9], dtype=torch.float64)
    objective, w, g = _quadratic(h, seed=3)
    eps = 1e-2
    c = w.abs() + 1
    expected = float((g.abs() * eps * c + 0.5 * h * (eps * c) ** 2).sum())
    res = worst_case(objective, w, c, eps, "linf", steps=20)
    assert_close(res.increase, expected, rtol=1e-10, what="Keskar box maximum")


def test_average_sharpness_closed_form():
    """E_{δ~N(0,ρ² diag(c²))} L(w+δ) − L(w) = ½ ρ² Σ h_i c_i² (the linear term averages out)."""
    h = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    objective, w, _ = _quadratic(h, seed=4)
    rho, c = 0.2, w.abs()
    expected = 0.5 * rho**2 * float((h * c**2).sum())
    res = average_case(objective, w, c, rho, 4000, torch.Generator().manual_seed(0))
    assert abs(res.mean - expected) <= 4 * res.stderr, (res.mean, expected, res.stderr)
    assert 0 < res.stderr < 0.2 * expected


def test_apgd_checkpoints_schedule():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < k <= 20 for k in apgd_checkpoints(20))


def test_sigma_search_bisection():
    """Accuracy falling linearly in σ: the σ with a 0.1 drop is 0.1/slope."""
    res = sigma_search(lambda s: (1.0 - 0.5 * s, 0.0), 1.0, target=0.1, tolerance=1e-4)
    assert res.converged
    assert abs(res.sigma - 0.2) <= 2e-4 / 0.5 + 1e-12
    unreachable = sigma_search(lambda s: (1.0, 0.0), 1.0, depth=5)
    assert not unreachable.converged and unreachable.sigma > 1.9


# --- measures on a small network ---------------------------------------------------------------


def _dataset(case) -> Dataset:
    return from_arrays(case.id, case.x, case.y, case.x, case.y, num_classes=case.num_classes)


def _rescaled(model: nn.Sequential, factors: dict[int, float]) -> nn.Sequential:
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for i, a in factors.items():
            out[i].weight.mul_(a)
    return out


def _value(model, data, measure_id, params=None, seed=0, dtype="float64"):
    report = analyze(
        model,
        data,
        [measure_id],
        params={measure_id: params} if params else None,
        options=AnalysisOptions(dtype=dtype, seed=seed),
    )
    result = report.measures[measure_id]
    assert result.status == "ok", result.details
    return result.value, result.details


def test_adaptive_sharpness_invariant_to_layerwise_rescaling():
    """Dinh et al. 2017: W₀ → 4W₀, W₂ → W₂/4 leaves a bias-free ReLU net unchanged; adaptive
    sharpness is unchanged, plain SAM sharpness is not."""
    case = relu_mlp(bias=False)
    data = _dataset(case)
    scaled = _rescaled(case.model, {0: 4.0, 2: 0.25})
    with torch.no_grad():
        assert_close(scaled(case.x), case.model(case.x), rtol=1e-12, what="same function")
    for measure_id, params in [
        ("sharpness.adaptive_worst", {"rho": 0.01}),
        ("sharpness.adaptive_worst", {"rho": 0.05, "norm": "l2", "logit_normalize": False}),
        ("sharpness.adaptive_average", {"rho": 0.1, "draws": 5}),
    ]:
        a, _ = _value(case.model, data, measure_id, params)
        b, _ = _value(scaled, data, measure_id, params)
        assert_close(b, a, rtol=1e-9, what=f"{measure_id} {params}")
    a, _ = _value(case.model, data, "sharpness.sam", {"rho": 0.05})
    b, _ = _value(scaled, data, "sharpness.sam", {"rho": 0.05})
    assert abs(a - b) > 0.05 * abs(a), (a, b)


@pytest.mark.parametrize(
    "measure_id",
    [
        "sharpness.adaptive_average",
        "sharpness.pacbayes_flatness",
        "sharpness.pacbayes_mag_flatness",
        "landscape.slice_1d",
    ],
)
def test_deterministic_for_a_fixed_seed(measure_id):
    case = relu_mlp()
    data = _dataset(case)
    params = {"landscape.slice_1d": {"points": 5}}.get(measure_id, {"draws": 3})
    if measure_id.startswith("sharpness.pacbayes"):
        params["depth"] = 6
    a, _ = _value(case.model, data, measure_id, params, seed=3)
    b, _ = _value(case.model, data, measure_id, params, seed=3)
    assert a == b
    if measure_id == "sharpness.adaptive_average":
        c, _ = _value(case.model, data, measure_id, params, seed=4)
        assert c != a


def test_worst_case_measures_report_their_work():
    case = relu_mlp()
    value, details = _value(case.model, _dataset(case), "sharpness.sam", {"steps": 7})
    assert value > 0
    assert details["steps"] == 7 and details["num_grad"] == 7
    assert details["sample"] == {
        "size": 20,
        "whole_set": True,
        "split": "train",
        "batch_size": 128,
        "batches": 1,
    }
    assert "stderr" in details and details["worst_loss"] >= details["clean_loss"]
    value, details = _value(case.model, _dataset(case), "sharpness.keskar")
    assert value > 0 and details["worst_loss"] > details["clean_loss"]


@pytest.mark.parametrize(
    ("measure_id", "params"),
    [
        ("sharpness.sam", {"rho": -0.1}),
        ("sharpness.sam", {"steps": 10**6}),
        ("sharpness.adaptive_worst", {"norm": "l3"}),
        ("sharpness.adaptive_average", {"draws": 0}),
        ("sharpness.pacbayes_flatness", {"depth": 1000}),
        ("sharpness.keskar", {"epsilon": -1.0}),
    ],
)
def test_bad_parameters_are_refused(measure_id, params):
    case = relu_mlp()
    with pytest.raises(BadParameter):
        analyze(case.model, _dataset(case), [measure_id], params={measure_id: params})


def test_input_smoothness_against_autograd_and_first_layer_relation():
    case = relu_mlp()
    value, details = _value(case.model, _dataset(case), "smoothness.input")
    norms = []
    for x, y in zip(case.x, case.y, strict=True):
        xi = x[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(case.model(xi)[0, y], xi)
        norms.append(float(g.norm()))
    assert_close(value, sum(norms) / len(norms), rtol=1e-10, what="mean ‖∇x f_y‖")
    first = details["first_layer"]
    assert first["layer"] == "0" and first["fraction_within_bound"] == 1.0
    assert details["grad_loss"]["mean"] > 0


def test_measures_leave_the_model_alone():
    case = relu_mlp()
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    for measure_id in ("sharpness.sam", "sharpness.adaptive_average", "smoothness.input"):
        _value(case.model, _dataset(case), measure_id)
    for k, v in case.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in case.model.parameters())
    assert not case.model.training


# --- ordering with label noise (Zhang et al. 2017 style) -----------------------------------------

NOISE_LEVELS = (0.0, 0.25, 0.5)


def _noisy_digits(p: float, n: int = 500, seed: int = 0) -> Dataset:
    ds = load_dataset("digits")
    gen = torch.Generator().manual_seed(seed)
    y = ds.y_train[:n].clone()
    k = round(p * n)
    idx = torch.randperm(n, generator=gen)[:k]
    y[idx] = torch.randint(0, 10, (k,), generator=gen)
    return from_arrays(f"digits-noise{p}", ds.x_train[:n], y, ds.x_test, ds.y_test, num_classes=10)


def _memorise(data: Dataset, seed: int = 0, max_epochs: int = 200) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    for epoch in range(max_epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
        if epoch % 5 == 4:
            with torch.no_grad():
                if bool((model(x).argmax(1) == y).all()):
                    break
    return model.eval()


@functools.lru_cache(maxsize=1)
def noisy_digits_models() -> tuple[tuple[float, nn.Module, Dataset], ...]:
    """Three MLPs (64-128-128-10) that memorised 500 digits with 0%, 25%, 50% random labels."""
    out = []
    for p in NOISE_LEVELS:
        data = _noisy_digits(p)
        out.append((p, _memorise(data), data))
    return tuple(out)


def ordered_values(measure_ids: list[str], params: dict | None = None) -> dict[str, list]:
    values: dict[str, list] = {m: [] for m in measure_ids}
    for _, model, data in noisy_digits_models():
        report = analyze(model, data, measure_ids, params=params, options=AnalysisOptions(seed=0))
        for m in measure_ids:
            assert report.measures[m].status == "ok", report.measures[m].details
            values[m].append(report.measures[m].value)
    return values


SHARPNESS_ORDERING = [
    "sharpness.sam",
    "sharpness.adaptive_worst",
    "sharpness.adaptive_average",
    "sharpness.pacbayes_flatness",
    "sharpness.pacbayes_mag_flatness",
    "sharpness.keskar",
    "smoothness.input",
]


def test_sharpness_rises_with_label_noise():
    params = {m: {"samples": 256} for m in SHARPNESS_ORDERING}
    params["sharpness.pacbayes_flatness"].update(draws=5, depth=8)
    params["sharpness.pacbayes_mag_flatness"].update(draws=5, depth=8)
    values = ordered_values(SHARPNESS_ORDERING, params)
    for _, model, data in noisy_digits_models():
        with torch.no_grad():
            assert bool((model(data.x_train).argmax(1) == data.y_train).all())
    failures = {m: v for m, v in values.items() if not v[0] < v[1] < v[2]}
    assert not failures, f"not increasing with label noise 0/25/50%: {failures}"


def test_no_nan_for_a_diverged_model():
    case = relu_mlp()
    with torch.no_grad():
        case.model[4].weight.mul_(1e200)
    report = analyze(case.model, _dataset(case), ["sharpness.sam"], options=F64)
    result = report.measures["sharpness.sam"].to_dict()
    assert result["value"] is None or math.isfinite(result["value"])


@pytest.mark.slow
def test_sharpness_rises_with_label_noise_at_the_defaults():
    """The same ordering with every measure at its default parameters (1024-example samples,
    full σ searches), plus the largest loss rise along a random 1-D slice."""
    ids = [*SHARPNESS_ORDERING, "landscape.slice_1d"]
    values = ordered_values(ids)
    failures = {m: v for m, v in values.items() if not v[0] < v[1] < v[2]}
    assert not failures, f"not increasing with label noise 0/25/50%: {failures}"


# --- σ search: draws chosen from the tolerance ---------------------------------------------------


def _noisy_linear_accuracy(seed: int = 0, spread: float = 0.06):
    """Accuracy under noise falling as 1 − 0.5 σ, each draw off by N(0, spread²): the σ with a
    0.1 drop is 0.2."""
    gen = torch.Generator().manual_seed(seed)

    def draw_at(sigma: float) -> float:
        return 1.0 - 0.5 * sigma + spread * float(torch.randn((), generator=gen))

    return draw_at


SEARCH = {"target": 0.1, "tolerance": 0.01, "upper": 2.0, "depth": 15}


def test_sigma_search_is_not_converged_when_the_draws_cannot_tell():
    """10 draws with spread 0.06: stderr ~0.019 > tolerance / 2, so never converged, even where
    the noisy drop happens to land within the tolerance."""
    params = {**SEARCH, "draws": 10, "max_draws": 10}
    for seed in range(5):
        res = search_sigma(_noisy_linear_accuracy(seed), 1.0, params)
        assert not res.converged
        assert res.accuracy_stderr > 0.005
        assert all(e["draws"] == 10 for e in res.evaluations)


def test_sigma_search_converges_with_enough_draws():
    params = {**SEARCH, "draws": 10, "max_draws": 2000}
    for seed in range(3):
        res = search_sigma(_noisy_linear_accuracy(seed), 1.0, params)
        assert res.converged
        assert res.accuracy_stderr <= 0.005
        drop = 1.0 - res.accuracy
        assert abs(drop - 0.1) <= 0.01
        # true drop at σ is 0.5 σ: within tolerance + 3 stderr of the target
        assert abs(0.5 * res.sigma - 0.1) <= 0.01 + 3 * 0.005
        assert all(10 <= e["draws"] <= 2000 for e in res.evaluations)
        assert any(e["draws"] > 10 for e in res.evaluations)


def test_sequential_mean_stops_at_the_stderr_limit():
    draw = _noisy_linear_accuracy(0, spread=0.05)
    mean, se, n = sequential_mean(lambda: draw(0.0), 10, 10_000, 0.005)
    assert abs(mean - 1.0) <= 4 * se
    assert se <= 0.005 and n > 10
    assert n < 400  # about (0.05 / 0.005)² = 100 draws
    _, se_one, n_one = sequential_mean(lambda: 1.0, 1, 5, 0.005)
    assert n_one == 2 and se_one == 0.0  # a single draw has no stderr: one more is drawn
    _, _, n_const = sequential_mean(lambda: 0.7, 10, 500, 0.005)
    assert n_const == 10


def test_pacbayes_flatness_reports_the_draws_and_the_stderr():
    case = relu_mlp()
    data = _dataset(case)
    params = {"depth": 6, "draws": 4, "max_draws": 40, "samples": 128}
    report = analyze(
        case.model, data, ["sharpness.pacbayes_flatness"], {"sharpness.pacbayes_flatness": params}
    )
    out = report.measures["sharpness.pacbayes_flatness"].to_dict()
    assert out["status"] == "ok", out
    assert out["stderr_limit"] == 0.005 and out["draws_range"] == [4, 40]
    assert 4 <= out["draws"] <= 40
    assert all(4 <= e["draws"] <= 40 for e in out["evaluations"])
    if out["converged"]:
        assert out["accuracy_stderr"] <= 0.005
    else:
        assert "stderr" in out["note"]
