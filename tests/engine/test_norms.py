"""Tests for genscope.norms: operator norms against dense operators, BatchNorm folding, R_A."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genscope.errors import UnsupportedModel
from genscope.norms import LayerNorms, layer_norms, spectral_complexity
from tests import cases
from tests.references import assert_close


def _dense(fn, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map at inputs of ``shape`` (batch of one)."""
    x = torch.zeros((1, *shape), dtype=torch.float64)
    jac = torch.func.jacrev(fn)(x)
    out = int(jac[0].numel() // x.numel())
    return jac.reshape(out, x.numel())


@pytest.mark.parametrize(
    ("stride", "padding", "groups"), [(1, 1, 1), (2, 1, 1), (1, 0, 1), (2, 2, 3)]
)
def test_conv_spectral_norm_is_the_operator_norm(stride: int, padding: int, groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, stride=stride, padding=padding, groups=groups).double()
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten()).eval()
    shape = (3, 7, 7)
    (n,) = layer_norms(model, torch.randn(1, *shape, dtype=torch.float64))
    a = _dense(lambda v: conv._conv_forward(v, conv.weight, None), shape)
    assert_close(n.spectral, torch.linalg.matrix_norm(a, 2), rtol=1e-6, what="conv spectral")
    assert_close(n.l21, a.norm(dim=1).sum(), rtol=1e-10, what="conv (2,1) norm")
    assert n.fan_in == 3 * 49 and n.fan_out == a.shape[0]
    assert_close(n.frobenius, conv.weight.norm(), rtol=1e-12, what="kernel Frobenius")
    assert n.spectral != pytest.approx(n.spectral_kernel)


def test_linear_norms_and_batchnorm_folding() -> None:
    case = cases.mlp_batchnorm()
    first, second = layer_norms(case.model, case.x)
    lin, bn = case.model[0], case.model[1]
    w = lin.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None]
    assert first.batchnorm_folded and not second.batchnorm_folded
    assert_close(first.spectral, torch.linalg.matrix_norm(w, 2), rtol=1e-12, what="spectral")
    assert_close(first.frobenius, w.norm(), rtol=1e-12, what="frobenius")
    assert_close(first.l1, w.abs().sum(), rtol=1e-12, what="l1")
    assert_close(first.l21, w.norm(dim=1).sum(), rtol=1e-12, what="l21")
    assert (first.fan_in, first.fan_out, first.num_params) == (5, 6, 30)


def test_exported_program_gives_the_same_norms() -> None:
    case = cases.small_cnn()
    exported = torch.export.export(case.model, (case.x,)).module()
    for a, b in zip(layer_norms(case.model, case.x), layer_norms(exported, case.x), strict=True):
        assert a.name == b.name and a.kind == b.kind
        assert_close(a.spectral, b.spectral, rtol=1e-9, what=f"{a.name} spectral")
        assert_close(a.l21, b.l21, rtol=1e-12, what=f"{a.name} l21")


def test_spectral_complexity_formula_and_invariance() -> None:
    def norms(s: float, l21: float) -> LayerNorms:
        return LayerNorms("a", "linear", s, 0.0, 0.0, 1, 1, 1, False, l21=l21)

    value = spectral_complexity([norms(2.0, 3.0), norms(0.5, 1.0)])
    expected = 1.0 * ((3.0 / 2.0) ** (2 / 3) + (1.0 / 0.5) ** (2 / 3)) ** 1.5
    assert value == pytest.approx(expected, rel=1e-12)
    assert spectral_complexity([norms(2.0, 3.0)], log=True) == pytest.approx(
        math.log(2.0 * 1.5), rel=1e-12
    )
    # rescaling layer-wise (W1·c, W2/c) leaves a bias-free ReLU net and R_A unchanged
    case = cases.relu_mlp(bias=False)
    before = spectral_complexity(layer_norms(case.model, case.x))
    with torch.no_grad():
        case.model[0].weight.mul_(3.0)
        case.model[2].weight.div_(3.0)
    assert spectral_complexity(layer_norms(case.model, case.x)) == pytest.approx(before, rel=1e-10)


def test_torchscript_is_refused() -> None:
    case = cases.relu_mlp()
    scripted = torch.jit.script(case.model)
    with pytest.raises(UnsupportedModel):
        layer_norms(scripted, case.x)
