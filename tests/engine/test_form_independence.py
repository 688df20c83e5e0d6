"""Form independence: a network gives the same report as a zoo module, as a safetensors state
dict with its architecture, and as a dynamic-batch ``torch.export`` program.

Three tiny trained networks (float64 analysis): an MLP with BatchNorm (moons), a LeNet with
max-pooling and a CIFAR ResNet-8 (digits). The default run checks a representative subset of
measures; ``-m slow`` checks every measure of the registry. Also the cases the view fixed:
the exported BatchNorm MLP's path norm equals the folded value computed by hand (measures.md,
"Conventions"), the exported max-pool CNN's path norm is flagged, smoothness.input on exported
MLPs equals autograd, and an operation the view cannot interpret is refused with a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from genscope import analyze
from genscope.io.checkpoints import FORMAT_EXPORT, load_checkpoint
from genscope.io.datasets import Dataset
from genscope.io.zoo import build_model
from genscope.measures import registry
from genscope.measures.context import AnalysisOptions
from genscope.measures.registry import FORMS, Measure, all_measures
from tests import cases

N = 24
OPTIONS = AnalysisOptions(dtype="float64", hessian_samples=N, margin_samples=N, batch_size=64)
NETS = {
    "mlp_bn": (
        "mlp",
        {"input_dim": 2, "widths": [6, 5], "num_classes": 2, "batchnorm": True},
        "moons",
    ),
    "cnn_maxpool": (
        "lenet",
        {"in_channels": 1, "input_size": 8, "num_classes": 10, "padding": "same"},
        "digits",
    ),
    "resnet": (
        "resnet",
        {"depth": 8, "in_channels": 1, "input_size": 8, "num_classes": 10, "width": 2},
        "digits",
    ),
}
DEFAULT_MEASURES = [
    "margin.output",
    "margin.normalized",
    "margin.homogeneous",
    "margin.all_layer",
    "hessian.top_eigenvalues",
    "sharpness.sam",
    "smoothness.input",
    "bound.spectral",
    "complexity.params",
    "complexity.spectral",
    "complexity.path_norm",
    "complexity.distance_from_init",
    "landscape.interpolate",
    "activations.sparsity",
    "collapse.nc1",
]
CHECKPOINT_PARAMS = ("init", "other")  # given the same second checkpoint in every form


@dataclass
class Net:
    name: str
    arch: str
    config: dict[str, Any]
    module: nn.Module
    data: Dataset
    safetensors: Path
    program: Path
    other: Path  # the same architecture at another seed, as a program


def _export(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Net]:
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for name, (arch, config, dataset) in NETS.items():
        data = cases.first_examples(dataset, N)
        torch.manual_seed(0)
        module = cases.train_briefly(build_model(arch, config), data)
        example = data.x_train[:2].float()
        st = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(st))
        torch.manual_seed(1)
        other = _export(build_model(arch, config).eval(), example, root / f"{name}_other.pt2")
        program = _export(module, example, root / f"{name}.pt2")
        out[name] = Net(name, arch, config, module, data, st, program, other)
    return out


def _report(net: Net, form: str, measure_ids: list[str]) -> dict[str, Any]:
    params = {
        m.id: {p.name: str(net.other) for p in m.params if p.name in CHECKPOINT_PARAMS}
        for m in all_measures()
        if m.id in measure_ids
    }
    params = {k: v for k, v in params.items() if v}
    if form == "module":
        model: Any = net.module
        kw: dict[str, Any] = {}
    elif form == "state_dict":
        model, kw = str(net.safetensors), {"arch": net.arch, "arch_config": net.config}
    else:
        model, kw = str(net.program), {}
    return analyze(model, net.data, measure_ids, params=params, options=OPTIONS, **kw).measures


def _stderr(details: dict[str, Any]) -> float:
    s = details.get("stderr")
    return float(s) if isinstance(s, (int, float)) and math.isfinite(s) else 0.0


def _check_forms(net: Net, measure_ids: list[str]) -> None:
    reports = {form: _report(net, form, measure_ids) for form in FORMS}
    specs = {m.id: m for m in all_measures()}
    for mid in measure_ids:
        ref = reports["module"][mid]
        for form in FORMS:
            r = reports[form][mid]
            where = f"{net.name} {mid} as {form}"
            if form not in specs[mid].forms:
                assert r.value is None and r.details.get("reason"), f"{where}: not refused"
                continue
            assert r.status == ref.status, f"{where}: {r.status} vs {ref.status} {r.details}"
            if ref.value is None:
                assert r.value is None, f"{where}: {r.value} where the module gives None"
                continue
            assert r.value is not None, f"{where}: None ({r.details.get('reason')})"
            tol = max(1e-6 * abs(ref.value), 1e-12, 3 * _stderr(ref.details))
            assert abs(r.value - ref.value) <= tol, f"{where}: {r.value} vs {ref.value}"


def test_every_measure_declares_known_forms() -> None:
    for m in all_measures():
        assert m.forms and m.forms <= set(FORMS), m.id


def test_a_form_a_measure_does_not_declare_is_refused_with_the_reason(
    nets: dict[str, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's ``forms`` is enforced: on an undeclared form the measure is not run and
    reports ``value: null`` with the reason (not a failure); the report names the form."""
    ran: list[str] = []

    def compute(ctx: Any, _params: dict[str, Any]) -> dict[str, Any]:
        ran.append(ctx.loaded.form)
        return {"value": 1.0}

    only = Measure("test.module_only", "metrics", compute, forms=frozenset({"module"}))
    monkeypatch.setitem(registry._REGISTRY, only.id, only)
    net = nets["mlp_bn"]
    inputs = {
        "module": (net.module, {}),
        "state_dict": (str(net.safetensors), {"arch": net.arch, "arch_config": net.config}),
        "program": (str(net.program), {}),
    }
    for form, (model, kw) in inputs.items():
        report = analyze(model, net.data, [only.id], options=OPTIONS, **kw)
        assert report.model["form"] == form
        result = report.measures[only.id]
        assert result.status == "ok"
        if form == "module":
            assert result.value == 1.0
        else:
            assert result.value is None and result.details["form"] == form
            assert "not defined for a model given as a " + form in result.details["reason"]
    assert ran == ["module"]


def test_program_form_is_a_graph(nets: dict[str, Net]) -> None:
    loaded = load_checkpoint(nets["mlp_bn"].program)
    assert loaded.format == FORMAT_EXPORT and isinstance(loaded.module, torch.fx.GraphModule)


@pytest.mark.parametrize("net", list(NETS))
def test_representative_measures_agree_across_forms(nets: dict[str, Net], net: str) -> None:
    _check_forms(nets[net], DEFAULT_MEASURES)


@pytest.mark.slow
@pytest.mark.parametrize("net", list(NETS))
def test_every_measure_agrees_across_forms(nets: dict[str, Net], net: str) -> None:
    _check_forms(nets[net], [m.id for m in all_measures()])


# --- the cases the view fixed -------------------------------------------------------------------


def _folded_path_norm(model: nn.Module) -> float:
    """measures.md: BatchNorm folded into the Linear before it, W' = aW, b' = ab + β − aμ with
    a = γ/sqrt(σ² + ε); then v ← W'²v + b'² from v = 𝟙 (ReLU is the identity on v ≥ 0)."""
    layers = [m for m in model.modules() if type(m) in (nn.Linear, nn.BatchNorm1d)]
    v = torch.ones(layers[0].in_features, dtype=torch.float64)
    i = 0
    while i < len(layers):
        lin = layers[i]
        w, b = lin.weight.detach().double(), lin.bias.detach().double()
        if i + 1 < len(layers) and type(layers[i + 1]) is nn.BatchNorm1d:
            bn = layers[i + 1]
            a = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            w, b = a[:, None] * w, a * b + bn.bias.detach().double() - a * bn.running_mean
            i += 1
        v = w**2 @ v + b**2
        i += 1
    return float(v.sum())


def test_exported_batchnorm_mlp_path_norm_is_the_folded_value(nets: dict[str, Net]) -> None:
    net = nets["mlp_bn"]
    r = _report(net, "program", ["complexity.path_norm"])["complexity.path_norm"]
    expected = _folded_path_norm(net.module)
    assert r.status == "ok" and r.details["exact"] and r.details["notes"] == []
    assert r.value == pytest.approx(expected, rel=1e-10)
    assert "(ab + β − aμ)²" in r.details["batchnorm_convention"]


def test_exported_maxpool_cnn_path_norm_is_flagged(nets: dict[str, Net]) -> None:
    r = _report(nets["cnn_maxpool"], "program", ["complexity.path_norm"])["complexity.path_norm"]
    assert r.value is not None and r.details["exact"] is False
    assert any("max-pooling" in note for note in r.details["notes"])


def _input_grad_mean(model: nn.Module, data: Dataset) -> float:
    model = model.double()
    norms = []
    for x, y in zip(data.x_train.double(), data.y_train, strict=True):
        xi = x[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, y], xi)
        norms.append(float(g.norm()))
    return sum(norms) / len(norms)


@pytest.mark.parametrize("batchnorm,dynamic", [(True, True), (False, True), (True, False)])
def test_smoothness_input_on_exported_mlp_equals_autograd(
    tmp_path: Path, batchnorm: bool, dynamic: bool
) -> None:
    """The first layer is read at its graph node; a fixed-batch program (5, for 24 examples)
    runs in zero-padded chunks."""
    data = cases.first_examples("moons", N)
    torch.manual_seed(0)
    config = {"input_dim": 2, "widths": [6, 5], "num_classes": 2, "batchnorm": batchnorm}
    module = cases.train_briefly(build_model("mlp", config), data)
    path = _export(module, data.x_train[:5].float(), tmp_path / "mlp.pt2", dynamic)
    r = analyze(str(path), data, ["smoothness.input"], options=OPTIONS).measures["smoothness.input"]
    assert r.status == "ok", r.details
    assert r.value == pytest.approx(_input_grad_mean(module, data), rel=1e-8)
    first = r.details["first_layer"]
    assert first is not None and first["layer"] == "layers.0"
    assert first["fraction_within_bound"] == 1.0


def test_an_operation_the_view_cannot_interpret_is_refused() -> None:
    data = cases.first_examples("moons", N)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    r = analyze(model, data, ["complexity.path_norm"], options=OPTIONS).measures
    result = r["complexity.path_norm"]
    assert result.value is None and result.details["exact"] is False
    assert "LayerNorm" in result.details["reason"]


def test_a_decomposed_program_is_refused_not_miscounted() -> None:
    """run_decompositions() turns Linear into addmm(b, x, Wᵀ), outside the view's affine maps:
    the path norm refuses with the operation named; its BatchNorm node is still read."""
    from genscope.errors import UnsupportedModel
    from genscope.measures.complexity import path_norm_squared
    from genscope.network import network_view

    torch.manual_seed(0)
    config = {"input_dim": 4, "widths": [5], "num_classes": 2, "batchnorm": True}
    model = build_model("mlp", config).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    gm = program.run_decompositions().module()
    view = network_view(gm, x)
    assert [s.kind for s in view.by_role("batchnorm")] == ["batchnorm"]
    with pytest.raises(UnsupportedModel, match="addmm"):
        path_norm_squared(gm, (4,))
