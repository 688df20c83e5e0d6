"""Tests for genscope.graph: layer functions and the perturbed forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genscope.errors import UnsupportedModel
from genscope.graph import affine_layers, homogeneity, layer_graph
from genscope.io.zoo import build_model
from genscope.network import network_view
from tests import cases
from tests.references import assert_close


def _export(model: nn.Module, x: torch.Tensor, dynamic: bool = True) -> nn.Module:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    return torch.export.export(model, (x,), dynamic_shapes=shapes).module()


def _manual_mlp(model: nn.Sequential, x: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """Wei & Ma's perturbed chain written out: h_i = φ(W_i h_{i−1} + b_i) + δ_i ‖h_{i−1}‖."""
    lin1, act1, lin2, act2, lin3 = model
    h = x
    for i, (lin, act) in enumerate([(lin1, act1), (lin2, act2), (lin3, nn.Identity())]):
        h = act(lin(h)) + deltas[i] * h.norm(dim=1, keepdim=True)
    return h


def test_perturbed_forward_is_the_papers_chain() -> None:
    case = cases.relu_mlp()
    graph = layer_graph(case.model, case.x)
    assert graph.points == ["0", "2", "4"]
    assert [layer.ops for layer in graph.layers] == [("ReLU",), ("ReLU",), ()]
    gen = torch.Generator().manual_seed(1)
    deltas = [
        0.3
        * torch.randn((case.x.shape[0], *layer.output_shape), generator=gen, dtype=torch.float64)
        for layer in graph.layers
    ]
    assert_close(graph(case.x, None), case.model(case.x), rtol=1e-12, what="unperturbed")
    assert_close(
        graph(case.x, deltas), _manual_mlp(case.model, case.x, deltas), rtol=1e-12, what="F(x, δ)"
    )
    record: dict[int, torch.Tensor] = {}
    out = graph(case.x, deltas, scaled=False, record=record)
    assert_close(out, record[2], rtol=0, what="recorded output")


@pytest.mark.parametrize("static", [False, True])
def test_exported_programs_match_the_module(static: bool) -> None:
    case = cases.small_cnn()
    exported = _export(case.model, case.x[:4], dynamic=not static)
    if static:  # what the checkpoint loader does for fixed-batch programs
        from genscope.io.checkpoints import _accept_any_batch

        _accept_any_batch(exported, 4)
    ref, graph = layer_graph(case.model, case.x), layer_graph(exported, case.x)
    assert graph.points == ref.points == ["0", "2", "5"]
    assert (graph.static_batch == 4) is static
    gen = torch.Generator().manual_seed(2)
    deltas = [
        torch.randn((case.x.shape[0], *layer.output_shape), generator=gen, dtype=torch.float64)
        for layer in ref.layers
    ]
    assert_close(graph(case.x, deltas), ref(case.x, deltas), rtol=1e-10, what="exported F(x, δ)")


def test_layer_functions_stop_at_merges_and_take_in_batchnorm() -> None:
    model = build_model("resnet", {"depth": 20, "width": 4, "in_channels": 1, "input_size": 8})
    model = model.double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    graph = layer_graph(model, x)
    by_name = {layer.name: layer for layer in graph.layers}
    second = by_name["layer1.0.conv2"]  # conv - bn, then the residual add: stops before it
    assert second.ops == ("BatchNorm2d",) and second.batchnorm is not None
    assert by_name["layer1.0.conv1"].ops == ("BatchNorm2d", "ReLU")
    assert len(graph.layers) == len(affine_layers(model, x))
    assert_close(graph(x, None), model(x), rtol=1e-12, what="resnet unperturbed")


def test_graph_of_module_that_symbolic_trace_cannot_handle() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 5)
            self.b = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 1e9:  # data-dependent control flow: symbolic_trace fails
                x = x * 0
            return self.b(torch.relu(self.a(x)))

    model = Branchy().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    try:
        graph = layer_graph(model, x)
    except UnsupportedModel as exc:  # export may refuse data-dependent branches too
        assert "could not capture" in str(exc)
        return
    assert graph.points == ["a", "b"]
    assert_close(graph(x, None), model(x), rtol=1e-12, what="exported fallback")


def test_torchscript_is_refused_with_a_clear_message() -> None:
    case = cases.relu_mlp()
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        layer_graph(torch.jit.script(case.model), case.x)


def test_homogeneity_still_detects_bias_free_chains() -> None:
    assert homogeneity(cases.relu_mlp(bias=False).model).degree == 3
    assert not homogeneity(cases.relu_mlp().model).homogeneous


def _structure(view) -> list[tuple[str, str]]:
    keep = {"affine", "batchnorm", "activation", "pool", "merge"}
    return [(s.role, s.kind) for s in view.steps if s.role in keep]


@pytest.mark.parametrize(
    "arch,config,shape",
    [
        ("mlp", {"input_dim": 4, "widths": [5], "num_classes": 2, "batchnorm": True}, (4,)),
        (
            "lenet",
            {"in_channels": 1, "input_size": 8, "num_classes": 3, "padding": "same"},
            (1, 8, 8),
        ),
        (
            "resnet",
            {"depth": 8, "in_channels": 1, "input_size": 8, "num_classes": 3, "width": 2},
            (1, 8, 8),
        ),
    ],
)
def test_network_view_is_the_same_for_module_and_exported_program(arch, config, shape) -> None:
    """Affine maps with their tensors, BatchNorm (module or aten node), pooling and activations
    read the same from a zoo module and from its torch.export program."""
    torch.manual_seed(0)
    model = build_model(arch, config).eval()
    x = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
    ours, theirs = network_view(model, x), network_view(program, x)
    assert ours.unknown == [] and theirs.unknown == []
    assert _structure(ours) == _structure(theirs)
    for a, b in zip(ours.affine, theirs.affine, strict=True):
        assert a.name == b.name
        torch.testing.assert_close(a.weight, b.weight)
    for a, b in zip(ours.by_role("batchnorm"), theirs.by_role("batchnorm"), strict=True):
        assert (a.folds_into is None) == (b.folds_into is None)
        torch.testing.assert_close(a.batchnorm.scale, b.batchnorm.scale)
        torch.testing.assert_close(a.batchnorm.shift, b.batchnorm.shift)
