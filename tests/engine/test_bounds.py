"""Numerical bounds: every term reproduces the value, invariances, ordering with label noise."""

from __future__ import annotations

import copy
import math

import torch

from genscope import analyze
from genscope.io.datasets import from_arrays
from genscope.measures import margins as margins_module
from genscope.measures.bounds import informativeness, kl_bernoulli, kl_inverse_upper
from genscope.measures.context import AnalysisOptions
from genscope.measures.stats import JIANG_RULE, QUANTILE_RULE, order_statistic, quantiles
from genscope.norms import layer_norms, spectral_complexity
from tests.cases import relu_mlp
from tests.engine.test_sharpness import noisy_digits_models
from tests.references import assert_close

F64 = AnalysisOptions(dtype="float64")


def _data(case):
    return from_arrays(case.id, case.x, case.y, case.x[:8], case.y[:8], num_classes=3)


def _run(model, data, measure_id, params=None, options=F64):
    report = analyze(model, data, [measure_id], params={measure_id: params or {}}, options=options)
    result = report.measures[measure_id]
    assert result.status == "ok", (result.error, result.details)
    return result


def _separable_case():
    """A bias-free ReLU net and data labelled by the net itself (all margins positive)."""
    case = relu_mlp(bias=False)
    with torch.no_grad():
        case.y = case.model(case.x.float().double()).argmax(1)
    return case


def test_spectral_bound_terms_reproduce_the_value():
    case = _separable_case()
    result = _run(case.model, _data(case), "bound.spectral", {"margin_quantile": 0.2})
    t = result.details["terms"]
    x = case.x.float().double()
    norms = layer_norms(case.model, x[:1])
    r_a = spectral_complexity(norms)
    assert_close(t["spectral_complexity"], r_a, rtol=1e-10, what="R_A")
    with torch.no_grad():
        logits = case.model(x)
    true = logits.gather(1, case.y[:, None]).squeeze(1)
    margins = true - logits.scatter(1, case.y[:, None], -math.inf).max(1).values
    gamma = float(torch.quantile(margins, 0.2))
    n = x.shape[0]
    expected = (
        float((margins <= gamma).double().mean())
        + 8 / n
        + 72 * float(x.norm()) * r_a * math.log(2 * 8) * math.log(n) / (gamma * n)
        + 3 * math.sqrt(math.log(2 / 0.05) / (2 * n))
    )
    assert_close(result.value, expected, rtol=1e-9, what="bound value")
    assert t["width"] == 8
    assert result.details["vacuous"] is (result.value >= 1)
    assert result.details["informative"] is (result.value < min(1 - 1 / 3, 0.99))
    assert result.details["rigorous"] is False and result.details["rigorous_reason"]
    conv = t["gamma_conventions"]
    assert conv["value"] == gamma and conv["rule"] == QUANTILE_RULE
    assert conv["jiang"] == float(torch.sort(margins).values[math.floor(0.2 * n) - 1])
    assert conv["jiang_rule"] == JIANG_RULE and "⌊m/10⌋" in JIANG_RULE
    assert result.details["test_error"] is not None


def test_norm_bounds_invariant_to_layerwise_rescaling():
    """Bias-free ReLU net, W₀ → 3W₀, W₄ → W₄/3: same function, same margins, same bounds."""
    case = _separable_case()
    scaled = copy.deepcopy(case.model)
    with torch.no_grad():
        scaled[0].weight.mul_(3.0)
        scaled[4].weight.div_(3.0)
    data = _data(case)
    for measure_id in ("bound.spectral", "bound.pacbayes_spectral"):
        a = _run(case.model, data, measure_id).value
        b = _run(scaled, data, measure_id).value
        assert_close(b, a, rtol=1e-8, what=measure_id)


def test_pacbayes_spectral_terms():
    case = _separable_case()
    result = _run(case.model, _data(case), "bound.pacbayes_spectral")
    t = result.details["terms"]
    kl = math.exp(t["log_kl"])
    assert_close(
        result.value,
        t["margin_loss"] + 4 * math.sqrt((kl + t["log_term"]) / (t["m"] - 1)),
        rtol=1e-10,
        what="L̂_γ + 4 sqrt((KL + ln(6dm/δ))/(m−1))",
    )
    assert t["depth"] == 3 and t["width"] == 8
    assert "bias-free ReLU chain" in result.details["assumptions"]


def test_kl_inverse():
    for p, c in [(0.0, 0.1), (0.1, 0.05), (0.3, 1.0), (0.5, 1e-4)]:
        q = kl_inverse_upper(p, c)
        assert q >= p
        assert q == 1.0 or abs(kl_bernoulli(p, q) - c) < 1e-9
    assert kl_inverse_upper(0.2, 0.0) == 0.2
    assert kl_inverse_upper(0.0, 100.0) == 1.0


def test_pacbayes_sharpness_bound():
    case = relu_mlp()
    params = {"draws": 3, "depth": 6, "mc_draws": 20}
    result = _run(case.model, _data(case), "bound.pacbayes_sharpness", params)
    t = result.details["terms"]
    assert result.details["rigorous"] is True
    assert result.value >= t["posterior_train_error_upper"] >= t["posterior_train_error_mc"]
    assert_close(t["log_grid_size"], math.log(2**6 - 1), rtol=1e-12, what="grid")
    if result.value < 1:  # at 1 the inverse saturates
        assert_close(
            kl_bernoulli(t["posterior_train_error_upper"], result.value),
            t["kl_rhs"],
            rtol=1e-6,
            what="kl(ê ‖ bound) = rhs",
        )
    again = _run(case.model, _data(case), "bound.pacbayes_sharpness", params)
    assert again.value == result.value
    d = result.details
    assert d["vacuous"] is (result.value >= 1)
    assert d["informative"] is (result.value < d["informative_below"])
    assert d["trivial_bound"] == 1 - 1 / 3 and d["informative_below"] == 1 - 1 / 3
    assert "1 − 1/K" in d["informative_rule"]


def test_vacuous_and_informative_are_told_apart():
    """0.999998 is not vacuous (< 1) but not informative; chance-level error is not informative;
    a bound that is not finite is vacuous."""
    near_one = informativeness(0.999998, 10)
    assert near_one["vacuous"] is False and near_one["informative"] is False
    assert informativeness(0.995, 1000)["informative"] is False  # within 0.01 of 1
    assert informativeness(0.98, 1000)["informative"] is True
    assert informativeness(0.5, 2)["informative"] is False  # the error of a coin flip
    assert informativeness(0.3, 2) | {} == {
        "vacuous": False,
        "informative": True,
        "trivial_bound": 0.5,
        "informative_below": 0.5,
        "informative_rule": "value < min(1 − 1/K, 1 − 0.01) with K = 2 classes",
    }
    for value in (1.0, 3.0, math.inf, None):
        out = informativeness(value, 10)
        assert out["vacuous"] is True and out["informative"] is False


def test_order_statistic_is_jiangs_rule():
    """Jiang et al. 2020: the ⌊m/10⌋-th smallest margin for the 10th percentile."""
    values = torch.arange(1.0, 26.0)  # 1 … 25
    assert order_statistic(values, 0.1) == 2.0  # ⌊2.5⌋ = 2nd smallest
    assert order_statistic(values, 0.01) == 1.0  # at least the smallest
    assert order_statistic(values, 1.0) == 25.0
    assert order_statistic(torch.tensor([math.nan, 3.0]), 0.5) == 3.0
    assert order_statistic(torch.tensor([]), 0.1) is None
    assert abs(quantiles(values)["p10"] - 3.4) < 1e-12  # the linear rule: position 0.1·24


def test_all_layer_bound_formula(monkeypatch):
    """The bound's arithmetic, with the all-layer margins given."""
    case = _separable_case()
    n = case.x.shape[0]
    values = torch.linspace(0.5, 1.5, n, dtype=torch.float64)
    correct = torch.ones(n, dtype=torch.bool)
    correct[0] = False
    values[0] = 0.0

    def fake(ctx, **_params):
        return {"values": values, "correct": correct, "points": ["0", "2", "4"]}

    monkeypatch.setattr(margins_module, "all_layer_margins", fake)
    result = _run(case.model, _data(case), "bound.all_layer")
    t = result.details["terms"]
    weights = [case.model[i].weight.detach() for i in (0, 2, 4)]
    sum_c = sum(
        float(w.abs().sum()) * math.sqrt(math.log(2 * w.shape[0] * w.shape[1])) for w in weights
    )
    rms = float(torch.sqrt((1 / values[1:] ** 2).mean()))
    expected = (
        sum_c / math.sqrt(n) * rms * math.log(n) ** 2
        + (math.log(1 / 0.05) + math.log(n)) / n
        + t["training_error"]
    )
    assert_close(result.value, expected, rtol=1e-9, what="all-layer bound")
    assert_close(t["sum_C"], sum_c, rtol=1e-9, what="Σ C_i")


# --- ordering with label noise ------------------------------------------------------------------


def test_bounds_rise_with_label_noise():
    ids = ["bound.spectral", "bound.pacbayes_spectral", "bound.pacbayes_sharpness"]
    params = {"bound.pacbayes_sharpness": {"samples": 256, "draws": 5, "depth": 8, "mc_draws": 10}}
    values: dict[str, list] = {m: [] for m in ids}
    kl: list[float] = []
    for _, model, data in noisy_digits_models():
        report = analyze(model, data, ids, params=params, options=AnalysisOptions(seed=0))
        for m in ids:
            assert report.measures[m].status == "ok", report.measures[m].details
            values[m].append(report.measures[m].value)
        kl.append(report.measures["bound.pacbayes_sharpness"].details["terms"]["kl"])
    for m in ("bound.spectral", "bound.pacbayes_spectral"):
        assert values[m][0] < values[m][1] < values[m][2], (m, values[m])
    # The PAC-Bayes-sharpness bound is vacuous on all three (it saturates at 1): its KL term is
    # what carries the ordering.
    assert kl[0] < kl[1] < kl[2], kl
    assert values["bound.pacbayes_sharpness"][0] <= values["bound.pacbayes_sharpness"][2]


def test_all_layer_bound_rises_with_label_noise():
    values = []
    for _, model, data in noisy_digits_models():
        report = analyze(model, data, ["bound.all_layer"], options=AnalysisOptions(seed=0))
        result = report.measures["bound.all_layer"]
        assert result.status == "ok", (result.error, result.details)
        values.append(result.value)
    assert values[0] < values[1] < values[2], values
