"""Representation measures against exact small references: neural collapse on synthetic
features, m-coherence on hand-made gradients, the empirical NTK against an explicit Jacobian
product, ReLU activity against a hand count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genscope.analysis import run_measure
from genscope.errors import BadParameter, UnsupportedModel
from genscope.features import FeatureExtractor, penultimate_features
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import from_arrays
from genscope.measures.context import AnalysisOptions, MeasureContext
from genscope.measures.registry import get_measure, resolve_params
from genscope.measures.representation import (
    coherence_from_sums,
    collapse_geometry,
    nc1_statistics,
    ntk_gram,
    relu_activity,
    simplex_etf,
)
from tests import cases
from tests.engine.helpers import export_pt2


def _context(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fmt: str = "module", **opts):
    data = from_arrays("t", x.float().numpy(), y.numpy(), num_classes=max(2, int(y.max()) + 1))
    loaded = LoadedModel(model, fmt, sha256="x")
    ctx = MeasureContext(loaded, data, AnalysisOptions(dtype="float64", **opts))
    # from_arrays stores float32; keep the exact float64 inputs of the test
    ctx._x_train = x.double()
    return ctx


def _run(ctx: MeasureContext, measure_id: str, **params):
    m = get_measure(measure_id)
    resolved = resolve_params([m], {measure_id: params})[measure_id]
    res = run_measure(ctx, m, resolved, lambda _f, _m: None)
    assert res.status == "ok", res.error
    return res


def _reference_nc1(h: torch.Tensor, y: torch.Tensor) -> float:
    """Papyan et al. 2020 NC1 with explicit covariance matrices and torch.linalg.pinv."""
    h = h.double()
    classes = y.unique()
    means = torch.stack([h[y == c].mean(0) for c in classes])
    mu_g = h.mean(0)
    dev = h - means[torch.searchsorted(classes, y)]
    sigma_w = dev.T @ dev / h.shape[0]
    centred = means - mu_g
    sigma_b = centred.T @ centred / len(classes)
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / len(classes))


def _etf_problem(c: int = 4, p: int = 6, per_class: int = 3, offset: float = 0.7):
    """Features exactly on a simplex ETF (plus a global offset), classifier W = Mᵀ."""
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(p, c, generator=gen, dtype=torch.float64))
    etf = basis @ (simplex_etf(c) * math.sqrt(c - 1) * math.sqrt(c / (c - 1)))  # p x C
    shift = offset * torch.randn(p, generator=gen, dtype=torch.float64)
    y = torch.arange(c).repeat_interleave(per_class)
    h = etf.T[y] + shift
    model = nn.Sequential(nn.Linear(p, c)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(2.5 * etf.T)
        model[0].bias.copy_(-(2.5 * etf.T) @ shift)
    return model, h, y


# --- neural collapse ----------------------------------------------------------------------------


def test_nc1_closed_form_one_dimension() -> None:
    # two balanced classes at -1 and +1, each example at its mean +- s: Σ_W = s², Σ_B = 1
    s = 0.3
    h = torch.tensor([[-1 - s], [-1 + s], [1 - s], [1 + s]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    stats = nc1_statistics(h, y)
    assert stats["nc1"] == pytest.approx(s**2 / 2, rel=1e-12)
    assert stats["trace_ratio"] == pytest.approx(s**2, rel=1e-12)


@pytest.mark.parametrize("balanced", [True, False])
def test_nc1_matches_explicit_pinv(balanced: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    c, p = 4, 7
    counts = [5, 5, 5, 5] if balanced else [3, 6, 4, 8]
    y = torch.cat([torch.full((k,), i) for i, k in enumerate(counts)])
    means = 2.0 * torch.randn(c, p, generator=gen, dtype=torch.float64)
    h = means[y] + torch.randn(len(y), p, generator=gen, dtype=torch.float64)
    stats = nc1_statistics(h, y)
    assert stats["nc1"] == pytest.approx(_reference_nc1(h, y), rel=1e-9)
    assert stats["rank_sigma_b"] == c - 1  # Σ_c n_c (μ_c − μ_G) = 0 always


def test_nc1_zero_when_within_class_deviation_is_orthogonal_to_the_means() -> None:
    # Σ_W ≠ 0 but lies outside the span of the centred means, where Σ_B^† vanishes
    means = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, -1.0, 0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    h = (
        means[y]
        + torch.tensor([0, 0, 1.0], dtype=torch.float64)
        * torch.tensor([1, -1, 1, -1, 1, -1], dtype=torch.float64)[:, None]
    )
    stats = nc1_statistics(h, y)
    assert abs(stats["nc1"]) < 1e-12
    assert stats["trace_sigma_w"] == pytest.approx(1.0)


def test_collapse_metrics_vanish_on_an_exact_simplex_etf() -> None:
    model, h, y = _etf_problem()
    ctx = _context(model, h, y)
    values = {mid: _run(ctx, mid).value for mid in ("collapse.nc1", "collapse.nc2")}
    values.update({mid: _run(ctx, mid).value for mid in ("collapse.nc3", "collapse.nc4")})
    for mid, v in values.items():
        assert abs(v) < 1e-10, (mid, v)
    res = _run(ctx, "collapse.nc2")
    assert abs(res.details["classifier_etf_distance"]) < 1e-10
    for key in ("equinorm", "equiangular", "max_angle"):
        assert abs(res.details["means_geometry"][key]) < 1e-10
    assert res.details["classifier"]["output_is_logits"] is True
    assert _run(ctx, "collapse.nc3").details["self_duality_sq"] < 1e-20
    assert res.details["sample"] == {"size": len(y), "whole_set": True, "split": "train"}


def test_collapse_metrics_are_large_without_collapse() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = torch.arange(3).repeat(20)
    model = nn.Sequential(nn.Linear(5, 3)).double().eval()
    ctx = _context(model, x, y)
    assert _run(ctx, "collapse.nc1").value > 1.0  # within-class spread dominates
    assert _run(ctx, "collapse.nc4").value > 0.1
    assert _run(ctx, "collapse.nc2").value > 0.05


def test_nc4_counts_disagreements_by_hand() -> None:
    # class means 0 and 2 on a line; the classifier's threshold is at 1.5 instead of 1
    h = torch.tensor([[0.0], [0.4], [1.4], [1.6], [2.0], [2.8]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    means = torch.tensor([h[:3].mean(), h[3:].mean()])  # 0.6, 2.1333: NCC threshold 1.3667
    from genscope.features import Classifier

    clf = Classifier(
        "fc",
        torch.tensor([[-1.0], [1.0]], dtype=torch.float64),
        torch.tensor([1.5, -1.5], dtype=torch.float64),
        "linear",
    )
    geo = collapse_geometry(h, y, clf)
    # the classifier says class 1 iff h > 1.5, the nearest mean iff h > (means sum)/2
    ncc = h[:, 0] > means.sum() / 2
    cls = h[:, 0] > 1.5
    assert geo["nc4_mismatch"] == pytest.approx(float((ncc != cls).double().mean()))
    assert geo["nc4_mismatch"] == pytest.approx(1 / 6)


def test_penultimate_features_of_an_exported_program_match_the_module(tmp_path) -> None:
    case = cases.relu_mlp()
    feats, logits, clf = penultimate_features(case.model, case.x)
    from genscope.io.checkpoints import load_checkpoint

    path = export_pt2(case.model, case.x[:2], tmp_path / "m.pt2")
    loaded = load_checkpoint(path)
    g_feats, g_logits, g_clf = penultimate_features(loaded.module, case.x)
    torch.testing.assert_close(g_feats, feats)
    torch.testing.assert_close(g_logits, logits)
    torch.testing.assert_close(g_clf.weight, clf.weight)
    with torch.no_grad():
        hidden = case.model[:4](case.x)
    torch.testing.assert_close(feats, hidden)


def test_torchscript_is_refused_with_a_clear_message() -> None:
    case = cases.relu_mlp()
    scripted = torch.jit.script(case.model)
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        FeatureExtractor(scripted, case.x[:1], penultimate=True)


def test_collapse_needs_a_linear_classifier() -> None:
    case = cases.small_cnn()
    conv_last = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    ctx = _context(conv_last.double().eval(), case.x, case.y)
    m = get_measure("collapse.nc2")
    res = run_measure(ctx, m, m.defaults(), lambda _f, _m: None)
    assert res.status == "failed" and res.error["code"] == "unsupported_model"


# --- coherence ----------------------------------------------------------------------------------


def test_coherence_of_hand_made_gradients() -> None:
    g = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    m = 5
    same = coherence_from_sums(float(((m * g) ** 2).sum()), m * float((g**2).sum()), m)
    assert same["m_coherence"] == pytest.approx(m) and same["alpha"] == pytest.approx(1.0)
    eye = torch.eye(4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    orth = coherence_from_sums(float((eye.sum(0) ** 2).sum()), float((eye**2).sum()), 4)
    assert orth["m_coherence"] == pytest.approx(1.0) and orth["alpha"] == pytest.approx(0.25)
    # two opposite gradients cancel: alpha = 0
    assert coherence_from_sums(0.0, 2.0, 2)["m_coherence"] == 0.0


def test_coherence_measure_is_m_for_identical_and_1_for_orthogonal_gradients() -> None:
    model = nn.Sequential(nn.Linear(6, 3, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight.zero_()  # softmax uniform: g_i = (1/3 - e_{y_i}) x_iᵀ
    x = torch.eye(6, dtype=torch.float64)  # orthogonal inputs -> orthogonal gradients
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    res = _run(_context(model, x, y), "coherence.m")
    assert res.value == pytest.approx(1.0, abs=1e-12)
    assert res.details["m"] == 6 and res.details["alpha"] == pytest.approx(1 / 6)
    same_x = torch.ones(6, 6, dtype=torch.float64)
    same_y = torch.zeros(6, dtype=torch.long)
    res = _run(_context(model, same_x, same_y), "coherence.m", chunk_size=4)
    assert res.value == pytest.approx(6.0, rel=1e-12)


def test_coherence_matches_a_loop_of_autograd_gradients() -> None:
    case = cases.relu_mlp()
    ctx = _context(case.model, case.x, case.y)
    res = _run(ctx, "coherence.m", chunk_size=7)
    grads = []
    for i in range(case.x.shape[0]):
        loss = F.cross_entropy(case.model(case.x[i : i + 1]), case.y[i : i + 1])
        gs = torch.autograd.grad(loss, list(case.model.parameters()))
        grads.append(torch.cat([g.reshape(-1) for g in gs]))
    g = torch.stack(grads)
    expected = float((g.sum(0) ** 2).sum() / (g**2).sum())
    assert res.value == pytest.approx(expected, rel=1e-10)
    assert all(p.grad is None for p in case.model.parameters())
    assert not case.model.training


# --- NTK ----------------------------------------------------------------------------------------


def _reference_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    flat = torch.cat([j.reshape(x.shape[0], -1, j[0, 0].numel()) for j in jac.values()], dim=2)
    return torch.einsum("iap,jap->ij", flat, flat)  # Σ over logits a and parameters p


@pytest.mark.parametrize("chunk,keep", [(20, True), (3, True), (3, False)])
def test_ntk_gram_matches_an_explicit_jacobian_product(chunk: int, keep: bool) -> None:
    case = cases.relu_mlp()
    params = {k: v.detach() for k, v in case.model.named_parameters()}

    def fn(p, x):
        return torch.func.functional_call(case.model, p, (x,))

    gram, work = ntk_gram(fn, params, case.x, chunk, keep)
    torch.testing.assert_close(gram, _reference_ntk(case.model, case.x), rtol=1e-10, atol=1e-12)
    assert work["chunks"] == math.ceil(20 / chunk)


def test_ntk_spectrum_measure() -> None:
    case = cases.mlp()
    ctx = _context(case.model, case.x, case.y)
    res = _run(ctx, "ntk.spectrum", samples=10, max_memory_mb=8)
    sample = ctx.train_sample(10, "ntk")
    eig = torch.linalg.eigvalsh(_reference_ntk(case.model, sample.x))
    assert res.value == pytest.approx(float(eig[0]), rel=1e-8)
    assert res.details["lambda_max"] == pytest.approx(float(eig[-1]), rel=1e-10)
    assert res.details["condition_number"] == pytest.approx(float(eig[-1] / eig[0]), rel=1e-8)
    assert res.details["lambda_min_mean_over_logits"] == pytest.approx(float(eig[0]) / 3, rel=1e-8)
    assert res.details["sample"]["size"] == 10
    again = _run(_context(case.model, case.x, case.y), "ntk.spectrum", samples=10)
    assert again.value == pytest.approx(res.value, rel=1e-10)  # same seed, same sample


# --- activation sparsity ------------------------------------------------------------------------


def _hand_relu_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -0.5, -10.0]))
    return model


def test_sparsity_against_a_hand_count() -> None:
    x = torch.tensor([[1.0, 1.0], [-1.0, 0.2], [0.5, -2.0], [2.0, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    # pre-activations: unit0 = x0 > 0 on rows 0, 2, 3; unit1 = x1 - 0.5 > 0 on rows 0, 3;
    # unit2 = -x0 - x1 - 10 never: active pairs 5 of 12, one dead unit
    res = _run(_context(_hand_relu_model(), x, y), "activations.sparsity")
    assert res.value == pytest.approx(5 / 12)
    (layer,) = res.details["layers"]
    assert layer["name"] == "1" and layer["units"] == 3 and layer["dead_units"] == 1


class _SharedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.fc2(self.relu(self.fc1(x)))))


class _FunctionalRelu(_SharedRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_sparsity_counts_each_application_and_finds_functional_relus(tmp_path) -> None:
    torch.manual_seed(0)
    shared = _SharedRelu().double().eval()
    functional = _FunctionalRelu().double().eval()
    functional.load_state_dict(shared.state_dict())
    x = torch.randn(30, 4, dtype=torch.float64)
    with torch.no_grad():
        a1 = torch.relu(shared.fc1(x))
        a2 = torch.relu(shared.fc2(a1))
    expected = [float((a > 0).double().mean()) for a in (a1, a2)]
    for model in (shared, functional):
        layers = relu_activity(FeatureExtractor(model, x[:1], relus=True), x, 7)
        assert [la["active_fraction"] for la in layers] == pytest.approx(expected)
    names = [la["name"] for la in relu_activity(FeatureExtractor(shared, x[:1], relus=True), x, 7)]
    assert names == ["relu", "relu#2"]
    from genscope.io.checkpoints import load_checkpoint

    exported = load_checkpoint(export_pt2(shared, x[:2], tmp_path / "s.pt2")).module
    layers = relu_activity(FeatureExtractor(exported, x[:1], relus=True), x, 7)
    assert [la["active_fraction"] for la in layers] == pytest.approx(expected)


def test_untraceable_models_fall_back_to_relu_hooks(monkeypatch) -> None:
    import genscope.features as features

    def refuse(*_a, **_k):
        raise UnsupportedModel("no graph")

    monkeypatch.setattr(features, "to_fx", refuse)
    torch.manual_seed(1)
    shared = _SharedRelu().double().eval()
    x = torch.randn(11, 4, dtype=torch.float64)
    with torch.no_grad():
        a1 = torch.relu(shared.fc1(x))
        a2 = torch.relu(shared.fc2(a1))
    layers = relu_activity(FeatureExtractor(shared, x[:1], relus=True), x, 4)
    assert [la["name"] for la in layers] == ["relu", "relu#2"]
    assert [la["active_fraction"] for la in layers] == pytest.approx(
        [float((a > 0).double().mean()) for a in (a1, a2)]
    )
    with pytest.raises(UnsupportedModel, match="no nn.ReLU"):
        FeatureExtractor(cases.mlp().model, x[:1], relus=True)


def test_conv_layers_report_dead_channels() -> None:
    case = cases.small_cnn()
    ex = FeatureExtractor(case.model, case.x[:1], relus=True)
    layers = relu_activity(ex, case.x, 5)
    assert [la["shape"] for la in layers] == [[3, 6, 6], [4, 3, 3]]
    assert all("dead_channels" in la for la in layers)


def test_no_relu_is_unsupported() -> None:
    case = cases.mlp()  # tanh
    with pytest.raises(UnsupportedModel, match="no ReLU"):
        FeatureExtractor(case.model, case.x[:1], relus=True)


def test_parameters_are_validated() -> None:
    with pytest.raises(BadParameter):
        resolve_params([get_measure("coherence.m")], {"coherence.m": {"samples": 1}})
    with pytest.raises(BadParameter):
        resolve_params([get_measure("ntk.spectrum")], {"ntk.spectrum": {"samples": 10**6}})
    with pytest.raises(BadParameter):
        resolve_params([get_measure("collapse.nc1")], {"collapse.nc1": {"samples": "many"}})


def test_measures_leave_the_model_alone_and_are_deterministic() -> None:
    case = cases.relu_mlp()
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    ids = ["collapse.nc1", "coherence.m", "ntk.spectrum", "activations.sparsity"]
    first = [
        _run(_context(case.model, case.x, case.y, seed=4), mid, samples=12).value for mid in ids
    ]
    second = [
        _run(_context(case.model, case.x, case.y, seed=4), mid, samples=12).value for mid in ids
    ]
    assert first == second
    for k, v in case.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert not case.model.training and all(p.grad is None for p in case.model.parameters())


def test_the_representation_group_through_analyze_gives_a_valid_report() -> None:
    import json

    import genscope
    from genscope.report import validate_report

    case = cases.small_cnn(dtype=torch.float32)
    data = from_arrays("cnn", case.x.numpy(), case.y.numpy(), case.x.numpy(), case.y.numpy())
    report = genscope.analyze(case.model, data, "representation").to_dict()
    assert validate_report(json.loads(json.dumps(report, allow_nan=False))) == []
    status = {mid: res["status"] for mid, res in report["measures"].items()}
    assert set(status) == {
        "activations.sparsity",
        "coherence.m",
        "collapse.nc1",
        "collapse.nc2",
        "collapse.nc3",
        "collapse.nc4",
        "ntk.spectrum",
    }
    assert all(s == "ok" for s in status.values()), report["measures"]
