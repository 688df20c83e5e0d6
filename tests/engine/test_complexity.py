"""Complexity measures: path norm by brute force, norms, distance from init, weight spectra."""

from __future__ import annotations

import copy
import itertools
import math

import torch
from torch import nn

from genscope import analyze
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import from_arrays
from genscope.io.zoo import build_model
from genscope.measures.complexity import layer_eigenvalues, path_norm_squared, power_law_fit
from genscope.measures.context import AnalysisOptions
from tests.cases import mlp_batchnorm, relu_mlp, small_cnn
from tests.references import assert_close

F64 = AnalysisOptions(dtype="float64")


def _data(case):
    return from_arrays(case.id, case.x, case.y, case.x, case.y, num_classes=case.num_classes)


def _run(model, data, measure_id, params=None):
    report = analyze(model, data, [measure_id], params={measure_id: params or {}}, options=F64)
    return report.measures[measure_id]


def _brute_force_path_norm(layers: list[nn.Linear]) -> float:
    """Σ over every path (from an input or a bias unit to an output) of Π w_e²."""
    total = 0.0
    widths = [layers[0].in_features] + [layer.out_features for layer in layers]
    # paths from input units through all layers, and from the bias of layer s onwards
    for start in range(len(layers)):
        sources = [("in", i) for i in range(widths[0])] if start == 0 else []
        if layers[start].bias is not None:
            sources += [("bias", j) for j in range(widths[start + 1])]
        for kind, unit in sources:
            first = start if kind == "in" else start + 1
            base = 1.0 if kind == "in" else float(layers[start].bias[unit].detach()) ** 2
            ranges = [range(w) for w in widths[first + 1 :]]
            for path in itertools.product(*ranges):
                prev, prod = unit, base
                for layer, nxt in zip(layers[first:], path, strict=True):
                    prod *= float(layer.weight[nxt, prev].detach()) ** 2
                    prev = nxt
                total += prod
    return total


def test_path_norm_equals_brute_force_sum_over_paths():
    for bias in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(3, 4, bias=bias),
            nn.ReLU(),
            nn.Linear(4, 3, bias=bias),
            nn.ReLU(),
            nn.Linear(3, 2, bias=bias),
        ).double()
        value, notes = path_norm_squared(net, (3,))
        expected = _brute_force_path_norm([net[0], net[2], net[4]])
        assert_close(value, expected, rtol=1e-12, what=f"path norm (bias={bias})")
        assert notes == []


def test_path_norm_measure_and_its_notes():
    case = relu_mlp(bias=False)
    result = _run(case.model, _data(case), "complexity.path_norm")
    assert result.status == "ok" and result.details["exact"]
    assert_close(result.details["sqrt"] ** 2, result.value, rtol=1e-12, what="φ₂²")
    pooled = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3)
    ).double()
    _, notes = path_norm_squared(pooled, (1, 4, 4))
    assert any("max-pooling" in n for n in notes)


def test_spectral_and_frobenius_logs():
    case = relu_mlp()
    weights = [case.model[i].weight.detach() for i in (0, 2, 4)]
    spec = _run(case.model, _data(case), "complexity.spectral")
    expected = sum(2 * math.log(float(torch.linalg.matrix_norm(w, ord=2))) for w in weights)
    assert_close(spec.value, expected, rtol=1e-8, what="Σ log ‖W‖₂²")
    fro = _run(case.model, _data(case), "complexity.frobenius")
    assert_close(
        fro.value,
        sum(2 * math.log(float(w.norm())) for w in weights),
        rtol=1e-12,
        what="Σ log ‖W‖_F²",
    )
    assert_close(
        fro.details["param_norm"],
        sum(float(w.norm()) ** 2 for w in weights),
        rtol=1e-12,
        what="param norm",
    )
    block = spec.details["margin"]
    gamma = block["gamma"]
    with torch.no_grad():  # γ is the linear-interpolation 0.1-quantile; Jiang's beside it
        logits = case.model(torch.as_tensor(case.x, dtype=torch.float64))
        y = torch.as_tensor(case.y)[:, None]
        margins = logits.gather(1, y).squeeze(1) - logits.scatter(1, y, -math.inf).max(1).values
    ordered = torch.sort(margins).values
    assert "linear interpolation" in block["quantile_rule"] and "Jiang" in block["jiang_rule"]
    assert_close(gamma, float(torch.quantile(margins, 0.1)), rtol=1e-6, what="γ")
    jiang = float(ordered[max(math.floor(0.1 * len(ordered)), 1) - 1])
    assert_close(block["jiang"], jiang, rtol=1e-6, what="⌊m/10⌋-th smallest")
    if gamma > 0:
        assert_close(
            spec.details["log_prod_of_spec_over_margin"],
            expected - 2 * math.log(gamma),
            rtol=1e-10,
            what="eq. 31",
        )


def test_param_count():
    case = small_cnn()
    result = _run(case.model, _data(case), "complexity.params")
    assert result.value == sum(p.numel() for p in case.model.parameters())
    assert result.details["weights"] == 1 * 3 * 9 + 3 * 4 * 9 + 36 * 3


def test_distance_from_init(tmp_path):
    cfg = {"input_dim": 6, "widths": [8], "num_classes": 3}
    torch.manual_seed(0)
    init = build_model("mlp", cfg).double()
    path = tmp_path / "init.pt"
    torch.save(init.state_dict(), path)
    trained = copy.deepcopy(init)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    loaded = LoadedModel(trained.eval(), "state_dict", sha256="x", arch="mlp", arch_config=cfg)
    case = relu_mlp()
    result = _run(loaded, _data(case), "complexity.distance_from_init", {"init": str(path)})
    assert result.status == "ok", result.details
    n_weights = 8 * 6 + 3 * 8
    assert_close(result.value, n_weights * 0.01, rtol=1e-10, what="Σ ‖W − W⁰‖_F²")
    n_all = sum(p.numel() for p in trained.parameters())
    assert_close(
        result.details["l2_all_params"], math.sqrt(n_all * 0.01), rtol=1e-10, what="‖w − w⁰‖"
    )
    missing = _run(loaded, _data(case), "complexity.distance_from_init")
    assert missing.status == "ok" and missing.value is None
    assert missing.details["needs"] == "init" and "init=PATH" in missing.details["reason"]


def test_power_law_fit_recovers_alpha():
    """Pareto samples with density ∝ λ^{-3} above 1: the fitted α is close to 3."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen, dtype=torch.float64)
    lam = u ** (-1 / 2)
    fit = power_law_fit(lam)
    assert abs(fit["alpha"] - 3.0) < 4 * fit["sigma"] + 0.05, fit
    assert fit["D"] < 0.05


def test_layer_eigenvalues():
    w = torch.randn(5, 3, dtype=torch.float64)
    assert_close(
        torch.sort(layer_eigenvalues(w)).values,
        torch.sort(torch.linalg.eigvalsh(w.T @ w)).values,
        rtol=1e-10,
        what="σ²",
    )
    k = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    evals = layer_eigenvalues(k)
    assert evals.numel() == 9 * 2
    tap = k[:, :, 1, 2]
    expected = torch.linalg.eigvalsh(tap.T @ tap) * 0.5
    assert any(
        torch.allclose(torch.sort(evals[i * 2 : i * 2 + 2]).values, expected) for i in range(9)
    )


def test_weight_spectrum_measure():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 3)).double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 40, generator=gen)
    y = torch.randint(0, 3, (20,), generator=gen)
    result = _run(net, from_arrays("r", x, y), "complexity.weight_spectrum")
    assert result.status == "ok", result.details
    layers = result.details["layers"]
    assert layers[0]["alpha"] is not None and result.value == layers[0]["alpha"]
    assert layers[1]["alpha"] is None and "fewer than" in layers[1]["reason"]
    lam = torch.linalg.svdvals(net[0].weight.detach()) ** 2
    assert_close(
        layers[0]["stable_rank"], float(lam.sum() / lam.max()), rtol=1e-10, what="stable rank"
    )


def test_path_norm_counts_batchnorm_as_a_folded_affine_layer():
    """Linear → BN → ReLU → Linear: BN folded first (measures.md), weight (aW)², bias
    (ab + β − aμ)², not a separate squared layer a²(W²·1 + b²) + (β − aμ)²."""
    case = mlp_batchnorm()
    lin1, bn, _, lin2 = case.model
    a = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - a * bn.running_mean
    w1, b1 = lin1.weight.detach(), lin1.bias.detach()
    hidden = ((a[:, None] * w1) ** 2).sum(1) + (a * b1 + shift) ** 2
    expected = float((lin2.weight.detach() ** 2 @ hidden + lin2.bias.detach() ** 2).sum())
    value, notes = path_norm_squared(case.model, (5,))
    assert_close(value, expected, rtol=1e-12, what="path norm with BatchNorm")
    assert notes == []
