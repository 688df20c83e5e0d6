"""Tests for the margin measures: closed forms, a slow strong reference solver, invariances,
label noise (Zhang et al. 2017; Bartlett et al. 2017, Fig. 1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from genscope import analyze
from genscope.all_layer import perturbed_forward, solve_all_layer
from genscope.errors import BadParameter, UnsupportedModel
from genscope.graph import LayerGraph, layer_graph
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import Dataset, from_arrays
from genscope.measures.context import AnalysisOptions, MeasureContext
from genscope.measures.margins import (
    all_layer_margins,
    hidden_margins,
    input_l2_margins,
    input_linf_margins,
    output_margins,
)
from tests import cases
from tests.references import assert_close

Forward = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


# --- helpers ---------------------------------------------------------------------------------


def _dataset(x: torch.Tensor, y: torch.Tensor) -> Dataset:
    return from_arrays("case", x.float(), y, x.float(), y)


def _context(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MeasureContext:
    ctx = MeasureContext(
        LoadedModel(model, "module", sha256="x"), _dataset(x, y), AnalysisOptions(dtype="float64")
    )
    ctx.x_train.copy_(x)  # keep the float64 inputs exactly
    return ctx


def _self_labelled(case: cases.Case, flip: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels = the model's own predictions, the first ``flip`` ones changed: most examples are
    correctly classified, a few are not."""
    with torch.no_grad():
        y = case.model(case.x).argmax(1)
    y[:flip] = (y[:flip] + 1) % case.num_classes
    return case.x, y


def reference_all_layer(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    shapes: list[tuple[int, ...]],
    depth: int = 14,
    steps: int = 60,
    restarts: int = 3,
    bracket: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A slow, strong solver for min ‖δ‖ s.t. argmax F(x, δ) ≠ y.

    Bisection on the radius r; at each r, projected gradient descent on F_y − F_j inside the
    ball ‖δ‖ ≤ r, for every wrong class j (targeted), from zero and from ``restarts`` random
    starts, all in one batch. ``bracket`` (lo, hi) narrows the first search; hi is doubled until
    a flip is found, so the answer never depends on it being right (a true margin below lo
    shows as lo). Returns the smallest radius at which a flip was found (0 for misclassified).
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = [math.prod(s) for s in shapes]
    n, p = x.shape[0], sum(sizes)

    def split(flat: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(flat, sizes, dim=1)
        return [q.reshape((flat.shape[0], *s)) for q, s in zip(parts, shapes, strict=True)]

    with torch.no_grad():
        logits = forward(x, split(x.new_zeros(n, p)))
    correct = output_margins(logits, y) > 0
    classes = logits.shape[1]
    # one row per (example, wrong class, start)
    rows = [
        (i, j, s)
        for i in range(n)
        for j in range(classes)
        if j != y[i]
        for s in range(restarts + 1)
    ]
    ex = torch.tensor([r[0] for r in rows])
    target = torch.tensor([r[1] for r in rows])
    random_start = torch.tensor([r[2] > 0 for r in rows])
    xr, yr = x[ex], y[ex]

    def attack(r: torch.Tensor) -> torch.Tensor:
        rr = r[ex].to(x.dtype)[:, None]
        d = torch.randn(len(rows), p, generator=gen, dtype=x.dtype)
        d = d / d.norm(dim=1, keepdim=True) * rr * torch.rand(len(rows), 1, generator=gen)
        d = torch.where(random_start[:, None], d, torch.zeros_like(d))
        hit = torch.zeros(len(rows), dtype=torch.bool)
        for s in range(steps + 1):
            d = d.detach().requires_grad_(True)
            out = forward(xr, split(d))
            hit |= output_margins(out.detach(), yr) <= 0
            if s == steps:
                break
            g = out.gather(1, yr[:, None]) - out.gather(1, target[:, None])
            (grad,) = torch.autograd.grad(g.sum(), d)
            with torch.no_grad():
                size = 2.0 * rr / steps * (1.0 if s < steps // 2 else 0.25)
                d = d - size * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
                d = d * (rr / d.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
        found = torch.zeros(n, dtype=torch.bool).index_put_((ex,), hit, accumulate=True)
        return found | ~correct

    if bracket is None:
        lo, hi = torch.zeros(n, dtype=torch.float64), torch.full((n,), 0.01, dtype=torch.float64)
    else:
        lo, hi = bracket[0].double().clone(), bracket[1].double().clone()
    for _ in range(40):
        ok = attack(hi)
        if bool(ok.all()):
            break
        lo = torch.where(ok, lo, hi)
        hi = torch.where(ok, hi, 2 * hi)
    for _ in range(depth):
        mid = (lo + hi) / 2
        ok = attack(mid)
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return torch.where(correct, hi, torch.zeros_like(hi))


def _shapes(graph: LayerGraph) -> list[tuple[int, ...]]:
    return [layer.output_shape for layer in graph.layers]


# --- all-layer margin -------------------------------------------------------------------------


def test_all_layer_margin_of_an_affine_classifier_is_the_closed_form() -> None:
    """m = min_{j≠y} (f_y − f_j) / (√2 ‖x‖) for a single affine map (measures.md)."""
    case = cases.linear_classifier()
    x, y = case.x, case.y
    with torch.no_grad():
        logits = case.model(x)
    correct = output_margins(logits, y) > 0
    expected = output_margins(logits, y) / (math.sqrt(2) * x.norm(dim=1))
    result = all_layer_margins(_context(case.model, x, y))
    assert result["points"] == ["0"]
    assert torch.equal(result["correct"], correct) and int(correct.sum()) >= 5
    assert_close(result["values"][correct], expected[correct], rtol=0.01, what="closed form")
    assert_close(result["values"][correct], expected[correct], rtol=1e-4, what="closed form, tight")
    assert torch.all(result["values"][~correct] == 0)
    assert bool(result["confirmed"][correct].all()) and result["unconfirmed"] == 0


def test_reported_perturbations_flip_the_prediction() -> None:
    case = cases.small_cnn()
    x, y = _self_labelled(case)
    graph = layer_graph(case.model, x)
    res = solve_all_layer(graph, x, y, keep_perturbations=True)
    ok = res.correct & res.confirmed
    assert res.unconfirmed == 0 and int(ok.sum()) >= 5
    assert res.perturbations is not None
    sizes = [math.prod(s) for s in _shapes(graph)]
    parts = torch.split(res.perturbations[ok], sizes, dim=1)
    deltas = [q.reshape((-1, *s)) for q, s in zip(parts, _shapes(graph), strict=True)]
    with torch.no_grad():
        flipped = output_margins(graph(x[ok], deltas), y[ok])
    assert bool((flipped <= 0).all())
    assert_close(res.perturbations[ok].norm(dim=1), res.values[ok], rtol=1e-12, what="norms")
    shares = res.shares[ok]
    assert_close(shares.sum(1), torch.ones(int(ok.sum())), rtol=1e-9, what="load shares")


@pytest.mark.parametrize(
    "factory", [cases.relu_mlp, cases.mlp, cases.small_cnn], ids=["relu_mlp", "tanh_mlp", "cnn"]
)
def test_fast_solver_matches_the_reference_solver(factory: Callable[..., cases.Case]) -> None:
    case = factory()
    x, y = _self_labelled(case)
    x, y = x[:12], y[:12]
    graph = layer_graph(case.model, x)
    fast = solve_all_layer(graph, x, y)
    bracket = (0.5 * fast.values, 2.0 * fast.values)
    ref = reference_all_layer(
        perturbed_forward(graph), x, y, _shapes(graph), depth=8, steps=40, bracket=bracket
    )
    ok = fast.correct
    assert int(ok.sum()) >= 6 and fast.unconfirmed == 0
    med_fast, med_ref = float(fast.values[ok].median()), float(ref[ok].median())
    assert abs(med_fast - med_ref) <= 0.05 * med_ref, (med_fast, med_ref)
    # each fast value is feasible: never below what the reference could certify as a bracket
    assert bool((fast.values[ok] <= ref[ok] * 1.10).all())


@pytest.mark.slow
def test_fast_solver_matches_the_reference_on_trained_digits_nets() -> None:
    from genscope.io.datasets import load_dataset

    data = load_dataset("digits")
    x, y = data.x_train[:40].double(), data.y_train[:40]
    for model in (_digits_mlp(), _digits_cnn()):
        _train(model, data.x_train.double(), data.y_train, steps=150)
        graph = layer_graph(model, x)
        fast = solve_all_layer(graph, x, y)
        bracket = (0.5 * fast.values, 2.0 * fast.values)
        ref = reference_all_layer(
            perturbed_forward(graph), x, y, _shapes(graph), depth=10, bracket=bracket
        )
        ok = fast.correct
        med_fast, med_ref = float(fast.values[ok].median()), float(ref[ok].median())
        assert abs(med_fast - med_ref) <= 0.05 * med_ref, (med_fast, med_ref)


def test_exported_program_gives_the_same_all_layer_margins() -> None:
    case = cases.small_cnn()
    x, y = _self_labelled(case)
    exported = torch.export.export(
        case.model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    ).module()
    a = solve_all_layer(layer_graph(case.model, x), x, y)
    b = solve_all_layer(layer_graph(exported, x), x, y)
    assert_close(b.values, a.values, rtol=1e-8, what="exported vs module")


def test_measure_reports_loads_points_and_shares_one_computation() -> None:
    case = cases.small_cnn()
    x, y = _self_labelled(case)
    report = analyze(case.model, _dataset(x, y), ["margin.all_layer"], options=_opts())
    out = report.measures["margin.all_layer"].to_dict()
    assert out["status"] == "ok", out
    assert [p["name"] for p in out["points"]] == ["0", "2", "5"]
    assert out["points"][1]["after"] == ["ReLU", "Flatten"]
    assert sum(item["mean_share"] for item in out["loads"]) == pytest.approx(1.0)
    assert out["unconfirmed"] == 0 and len(out["values"]) == x.shape[0]
    assert out["value"] == pytest.approx(out["quantiles"]["p50"])
    ctx = _context(case.model, x, y)
    assert all_layer_margins(ctx) is all_layer_margins(ctx)


def test_bad_parameters_and_torchscript() -> None:
    case = cases.relu_mlp()
    ctx = _context(case.model, case.x, case.y)
    with pytest.raises(BadParameter):
        all_layer_margins(ctx, max_iter=0)
    with pytest.raises(BadParameter):
        all_layer_margins(ctx, steps=3)
    scripted = torch.jit.script(case.model)
    ctx = MeasureContext(
        LoadedModel(scripted, "torchscript", sha256="x"), _dataset(case.x, case.y), _opts()
    )
    with pytest.raises(UnsupportedModel):
        all_layer_margins(ctx)
    report = analyze(scripted, _dataset(case.x, case.y), ["margin.all_layer"], options=_opts())
    assert report.measures["margin.all_layer"].status == "failed"


# --- output, normalized, homogeneous: invariances ----------------------------------------------


def _opts() -> AnalysisOptions:
    return AnalysisOptions(dtype="float64")


def _values(model: nn.Module, data: Dataset, measure: str, key: str = "values") -> torch.Tensor:
    out = analyze(model, data, [measure], options=_opts()).measures[measure].to_dict()
    assert out["status"] == "ok", out
    return torch.tensor(out[key], dtype=torch.float64)


def test_rescaling_a_homogeneous_net_leaves_normalized_margins_unchanged() -> None:
    case = cases.relu_mlp(bias=False)
    x, y = _self_labelled(case)
    data = _dataset(x, y)
    before = {m: _values(case.model, data, m) for m in ("margin.output", "margin.normalized")}
    homog = analyze(case.model, data, ["margin.homogeneous"], options=_opts())
    homog_before = homog.measures["margin.homogeneous"].to_dict()
    assert homog_before["homogeneous"] and homog_before["degree"] == 3
    with torch.no_grad():  # layer-wise: W1·c, W2/c computes the same function
        case.model[0].weight.mul_(4.0)
        case.model[2].weight.div_(4.0)
    for m, v in before.items():
        assert_close(_values(case.model, data, m), v, rtol=1e-9, what=m)
    after = analyze(case.model, data, ["margin.homogeneous"], options=_opts())
    homog_after = after.measures["margin.homogeneous"].to_dict()
    assert homog_after["normalized_layerwise"] == pytest.approx(
        homog_before["normalized_layerwise"], rel=1e-9
    )
    with torch.no_grad():  # θ → cθ: q_n scales by c^L, so q / ‖θ‖^L is unchanged
        for p in case.model.parameters():
            p.mul_(1.7)
    scaled = analyze(case.model, data, ["margin.homogeneous"], options=_opts())
    homog_scaled = scaled.measures["margin.homogeneous"].to_dict()
    assert homog_scaled["value"] == pytest.approx(homog_after["value"], rel=1e-9)
    assert_close(
        torch.tensor(homog_scaled["sorted_values"]),
        torch.tensor(homog_after["sorted_values"]),
        rtol=1e-9,
        what="sorted normalized margins",
    )
    q = output_margins(case.model(x), y).detach()
    rho = torch.cat([p.detach().flatten() for p in case.model.parameters()]).norm()
    assert homog_scaled["value"] == pytest.approx(float(q.min() / rho**3), rel=1e-6)


def test_homogeneous_margin_says_not_homogeneous() -> None:
    case = cases.relu_mlp()
    out = analyze(case.model, _dataset(case.x, case.y), ["margin.homogeneous"], options=_opts())
    result = out.measures["margin.homogeneous"].to_dict()
    assert result["value"] is None and result["homogeneous"] is False
    assert "not homogeneous" in result["reason"]


def test_normalized_margin_formula() -> None:
    from genscope.norms import layer_norms, spectral_complexity

    case = cases.small_cnn()
    x, y = _self_labelled(case)
    out = analyze(case.model, _dataset(x, y), ["margin.normalized"], options=_opts())
    result = out.measures["margin.normalized"].to_dict()
    r_a = spectral_complexity(layer_norms(case.model, x[:1]))
    gamma = output_margins(case.model(x), y).detach()
    expected = gamma * x.shape[0] / (r_a * x.reshape(x.shape[0], -1).norm())
    assert_close(torch.tensor(result["values"]), expected, rtol=1e-5, what="γ n / (R_A ‖X‖)")
    assert result["spectral_complexity"] == pytest.approx(r_a, rel=1e-6)
    assert result["conventions"]["biases"] == "left out"


def test_output_margin_per_class_and_quantiles() -> None:
    case = cases.mlp()
    out = analyze(case.model, _dataset(case.x, case.y), ["margin.output"], options=_opts())
    result = out.measures["margin.output"].to_dict()
    assert len(result["per_class"]) == 3
    assert sum(c["count"] for c in result["per_class"]) == case.x.shape[0]
    assert set(result["quantiles"]) == {"p10", "p25", "p50", "p75", "p90"}
    assert "linear interpolation" in result["quantile_rule"]
    values = torch.sort(torch.tensor(result["values"], dtype=torch.float64)).values
    m = values.numel()
    p10 = result["p10"]
    assert p10["value"] == result["quantiles"]["p10"]
    assert p10["value"] == pytest.approx(float(torch.quantile(values, 0.1)), abs=1e-12)
    assert p10["jiang"] == float(values[max(m // 10, 1) - 1])  # the ⌊m/10⌋-th smallest
    assert "Jiang" in p10["jiang_rule"]


# --- hidden-layer margins ----------------------------------------------------------------------


def test_hidden_margins_match_direct_gradients() -> None:
    case = cases.relu_mlp()
    x, y = _self_labelled(case)
    graph = layer_graph(case.model, x)
    out = hidden_margins(graph, x, y, batch_size=7)
    assert out["points"] == ["input", "0", "2", "4"]
    lin1, act1, lin2, act2, lin3 = case.model
    # direct: the hidden value after the first layer function, as a leaf
    with torch.no_grad():
        h1 = act1(lin1(x))
    h1 = h1.clone().requires_grad_(True)
    h2 = act2(lin2(h1))
    logits = lin3(h2)
    diff = output_margins(logits, y)
    (grad,) = torch.autograd.grad(diff.sum(), h1)
    expected = diff.detach() / torch.sqrt(1e-6 + grad.pow(2).sum(1))
    assert_close(out["margins"][:, 1], expected, rtol=1e-10, what="first-order margin at h1")
    assert_close(out["margins"][:, 3], diff.detach() / math.sqrt(2 + 1e-6), rtol=1e-10, what="out")
    variation = h1.detach().var(dim=0, unbiased=False).sum().sqrt()
    assert_close(out["variation"][1], variation, rtol=1e-10, what="total variation")
    assert bool((out["margins"][:2, 0] < 0).all())  # misclassified: negative


def test_hidden_margin_measure_signature() -> None:
    case = cases.small_cnn()
    x, y = _self_labelled(case)
    out = analyze(case.model, _dataset(x, y), ["margin.hidden"], options=_opts())
    result = out.measures["margin.hidden"].to_dict()
    assert [layer["point"] for layer in result["layers"]] == ["input", "0", "2", "5"]
    sig = result["layers"][2]["signature"]
    iqr = sig["q3"] - sig["q1"]
    assert sig["upper_fence"] == pytest.approx(sig["q3"] + 1.5 * iqr)
    assert sig["lower_fence"] == pytest.approx(sig["q1"] - 1.5 * iqr)
    assert result["value"] == pytest.approx(sig["q2"]) and result["headline_point"] == "2"


# --- robust margins ----------------------------------------------------------------------------


def test_input_margins_of_an_affine_classifier_are_closed_forms() -> None:
    """L2: min_j (f_y − f_j) / ‖w_y − w_j‖₂; L∞: min_j (f_y − f_j) / ‖w_y − w_j‖₁."""
    case = cases.linear_classifier()
    x, y = case.x, case.y
    w = case.model[0].weight.detach()
    with torch.no_grad():
        logits = case.model(x)
    correct = output_margins(logits, y) > 0
    gaps = logits.gather(1, y[:, None]) - logits
    diffs = w[y][:, None, :] - w[None, :, :]  # (n, classes, features)
    l2 = (gaps / diffs.norm(dim=2)).scatter(1, y[:, None], math.inf).min(1).values
    l1 = (gaps / diffs.abs().sum(2)).scatter(1, y[:, None], math.inf).min(1).values
    graph = layer_graph(case.model, x)
    res = input_l2_margins(graph, x, y, keep_perturbations=True)
    assert_close(res.values[correct], l2[correct], rtol=1e-4, what="L2 radius")
    upper = res.perturbations.abs().amax(1)  # type: ignore[union-attr]
    upper[~correct] = math.inf
    linf, ok, _ = input_linf_margins(graph, x, y, upper, steps=20, depth=16)
    assert bool(ok[correct].all())
    assert_close(linf[correct], l1[correct], rtol=0.01, what="L∞ radius")


def test_robust_measure_runs_and_includes_the_input_layer() -> None:
    case = cases.relu_mlp()
    x, y = _self_labelled(case)
    out = analyze(case.model, _dataset(x, y), ["margin.robust"], options=_opts())
    result = out.measures["margin.robust"].to_dict()
    assert result["status"] == "ok", result
    assert result["all_layer"]["loads"][0]["point"] == "input"
    assert len(result["robust_accuracy"]) == 4
    l2, linf = torch.tensor(result["l2"]["values"]), torch.tensor(result["linf"]["values"])
    assert bool((linf <= l2 + 1e-9).all())  # ‖η‖∞ ≤ ‖η‖₂
    bad = analyze(case.model, _dataset(x, y), ["margin.robust"], {"margin.robust": {"eps": "a"}})
    assert bad.measures["margin.robust"].to_dict()["error"]["code"] == "bad_parameter"


def _affine_case(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 6 -> 5 affine classifier with rows of unequal norms (so the nearest class is often not
    the largest wrong logit), 60 examples labelled by its predictions, the first 6 changed."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5)).double().eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.linspace(0.3, 3.0, 5, dtype=torch.float64)[:, None])
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(60, 6, generator=gen).float().double()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:6] = (y[:6] + 1) % 5
    return model, x, y


def _affine_radii(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Closed forms of an affine classifier: per competing class j, gap_j / ‖w_y − w_j‖_q with
    q = 2 (L2 radius) and q = 1 (L∞ radius); the radius is the minimum over j."""
    w = model[0].weight.detach().double()
    with torch.no_grad():
        logits = model(x)
    gaps = logits.gather(1, y[:, None]) - logits
    diffs = w[y][:, None, :] - w[None, :, :]
    l2 = (gaps / diffs.norm(dim=2)).scatter(1, y[:, None], math.inf)
    l1 = (gaps / diffs.abs().sum(2)).scatter(1, y[:, None], math.inf)
    return {
        "correct": output_margins(logits, y) > 0,
        "l2": l2.min(1).values,
        "linf": l1.min(1).values,
        "linf_class": l1.argmin(1),
        "top_class": logits.scatter(1, y[:, None], -math.inf).argmax(1),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_radii_of_affine_models_find_the_nearest_class(seed: int) -> None:
    """Every L2 and L∞ radius equals min_j gap_j / ‖w_y − w_j‖_q (q = 2, 1) to the resolution,
    for 5 classes, where the nearest class is often not the one with the largest wrong logit;
    robust accuracy at each ε counts the closed-form radii above ε."""
    model, x, y = _affine_case(seed)
    exact = _affine_radii(model, x, y)
    correct = exact["correct"]
    assert int(correct.sum()) >= 5
    # the case the largest-wrong-logit attack gets wrong is present
    assert bool((exact["linf_class"] != exact["top_class"])[correct].any())
    eps = [0.05, 0.1, 0.2, 0.4]
    params = {"all_layer": False, "linf_depth": 24, "eps": ",".join(map(str, eps))}
    out = analyze(model, _dataset(x, y), ["margin.robust"], {"margin.robust": params}, _opts())
    result = out.measures["margin.robust"].to_dict()
    assert result["status"] == "ok", result
    assert result["classes"]["attacked"] == 4 and result["classes"]["of"] == 4
    l2 = torch.tensor(result["l2"]["values"], dtype=torch.float64)
    linf = torch.tensor(result["linf"]["values"], dtype=torch.float64)
    resolution = result["linf"]["resolution"]
    assert 0 < resolution < 1e-6
    assert_close(l2[correct], exact["l2"][correct], rtol=1e-5, what="L2 radius")
    gap = linf[correct] - exact["linf"][correct]
    assert bool((gap >= -1e-12).all()), gap.min()  # a flip within the radius is real
    assert bool((gap <= resolution + 1e-12).all()), (gap.max(), resolution)
    assert torch.all(linf[~correct] == 0) and torch.all(l2[~correct] == 0)
    n = x.shape[0]
    for row, e in zip(result["robust_accuracy"], eps, strict=True):
        for norm in ("l2", "linf"):
            radii = torch.where(correct, exact[norm], torch.zeros_like(exact[norm]))
            assert not bool(((radii - e).abs() < 1e-5).any())  # no radius within the resolution
            assert row[norm] == pytest.approx(float((radii > e).sum()) / n, abs=1e-12)


def test_robust_radius_over_fewer_classes_is_an_upper_bound() -> None:
    """``attack_classes`` = 1 attacks only the largest wrong logit: never below the exact radius,
    and above it where the nearest class is another one."""
    model, x, y = _affine_case(0)
    exact = _affine_radii(model, x, y)
    params = {"all_layer": False, "linf_depth": 24, "attack_classes": 1, "classes": 1}
    out = analyze(model, _dataset(x, y), ["margin.robust"], {"margin.robust": params}, _opts())
    result = out.measures["margin.robust"].to_dict()
    assert result["classes"]["attacked"] == 1 and "highest logits" in result["classes"]["rule"]
    linf = torch.tensor(result["linf"]["values"], dtype=torch.float64)
    c = exact["correct"]
    assert bool((linf[c] >= exact["linf"][c] - 1e-12).all())
    other = c & (exact["linf_class"] != exact["top_class"])
    assert bool((linf[other] > exact["linf"][other] * 1.001).any())


# --- label noise ---------------------------------------------------------------------------------


def _digits_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def _digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    model.to(x.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_memorising_random_labels_lowers_all_layer_and_normalized_margins() -> None:
    """Zhang et al. 2017; Bartlett et al. 2017, Fig. 1: on 600 digits, a net that memorised 50%
    random labels has smaller all-layer and normalized margins than the same net on clean ones."""
    from genscope.io.datasets import load_dataset

    data = load_dataset("digits")
    x, y = data.x_train[:600], data.y_train[:600]
    gen = torch.Generator().manual_seed(0)
    noisy = y.clone()
    flip = torch.rand(noisy.shape[0], generator=gen) < 0.5
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    medians = {}
    for name, labels in (("clean", y), ("noisy", noisy)):
        torch.manual_seed(0)
        model = _train(_digits_mlp(), x, labels, steps=200)
        report = analyze(
            model,
            from_arrays("digits", x, labels),
            ["margin.all_layer", "margin.normalized"],
            options=AnalysisOptions(),
        )
        assert report.metrics["train_accuracy"] > 0.99, name
        medians[name] = {m: r.value for m, r in report.measures.items()}
        assert report.measures["margin.all_layer"].details["unconfirmed"] == 0
    for m in ("margin.all_layer", "margin.normalized"):
        assert medians["noisy"][m] < 0.5 * medians["clean"][m], (m, medians)
