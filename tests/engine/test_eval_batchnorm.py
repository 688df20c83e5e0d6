"""Inference-mode BatchNorm rewritten as its affine map: same function, same curvature."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genscope.linalg.eval_batchnorm import AffineEvalBatchNorm, affine_batch_norm
from genscope.linalg.operators import HessianOperator, module_functional
from tests.cases import CASES
from tests.references import assert_close, dense_loss_hessian, flat_params


@pytest.mark.parametrize("shape", [(7, 4), (7, 4, 5), (7, 4, 3, 5), (2, 4, 2, 3, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_affine_form_equals_the_fused_kernel(shape: tuple[int, ...], affine: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    mean = torch.randn(4, generator=gen, dtype=torch.float64)
    var = torch.rand(4, generator=gen, dtype=torch.float64) + 0.1
    weight = torch.randn(4, generator=gen, dtype=torch.float64) if affine else None
    bias = torch.randn(4, generator=gen, dtype=torch.float64) if affine else None
    expected = F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-3)
    assert_close(affine_batch_norm(x, mean, var, weight, bias, 1e-3), expected, 1e-13, 1e-13)
    with AffineEvalBatchNorm() as mode:
        got = F.batch_norm(x, mean, var, weight, bias, False, 0.1, 1e-3)
    assert mode.rewritten == 1
    assert_close(got, expected, 1e-13, 1e-13)


def test_training_mode_and_missing_statistics_run_unchanged() -> None:
    bn = nn.BatchNorm1d(4).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    bn.train()
    with AffineEvalBatchNorm() as mode:
        out = bn(x)
    assert mode.rewritten == 0
    assert int(bn.num_batches_tracked) == 1  # the running statistics were updated as usual
    no_stats = nn.BatchNorm1d(4, track_running_stats=False).double().eval()
    with AffineEvalBatchNorm() as mode:
        assert_close(no_stats(x), F.batch_norm(x, None, None, no_stats.weight, no_stats.bias, True))
    assert mode.rewritten == 0
    assert out.shape == x.shape


@pytest.mark.parametrize("path", ["graph", "forward_over_reverse", "forward_over_reverse_vmap"])
def test_hessian_through_the_affine_form_is_the_dense_hessian(path: str) -> None:
    case = CASES["mlp_batchnorm"]()
    params = flat_params(case.model)
    rewritten = HessianOperator(module_functional(case.model), params, case.x, case.y, path=path)
    fused = HessianOperator(
        module_functional(case.model),
        params,
        case.x,
        case.y,
        path=path,
        affine_eval_batchnorm=False,
    )
    reference = dense_loss_hessian(case.model, case.x, case.y)
    assert_close(rewritten.to_dense(), reference, 1e-10, 1e-12)
    assert_close(fused.to_dense(), reference, 1e-10, 1e-12)
    assert fused.path_info["affine_eval_batchnorm"] == 0
    if path == "graph":
        assert rewritten.path_info["affine_eval_batchnorm"] == 1


def test_convolutional_batchnorm_and_untouched_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    ).double()
    x = torch.randn(6, 2, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial running statistics
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = HessianOperator(module_functional(model), flat_params(model), x, y)
    assert_close(op.to_dense(), dense_loss_hessian(model, x, y), 1e-10, 1e-12)
    assert op.describe()["affine_eval_batchnorm"] == 1
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_exported_graphs_call_the_aten_operators_and_are_rewritten_too() -> None:
    case = CASES["mlp_batchnorm"]()
    module = torch.export.export(case.model, (case.x,)).module()
    op = HessianOperator(module_functional(module), flat_params(module), case.x, case.y)
    assert op.path_info["affine_eval_batchnorm"] == 1
    assert_close(op.to_dense(), dense_loss_hessian(case.model, case.x, case.y), 1e-10, 1e-12)
    bn = case.model[1]
    hidden = case.model[0](case.x).detach()
    args = (hidden, bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, bn.eps)
    expected = torch.ops.aten._native_batch_norm_legit_no_training.default(*args)[0]
    with AffineEvalBatchNorm() as mode:
        got = torch.ops.aten._native_batch_norm_legit_no_training.default(*args)[0]
    assert mode.rewritten == 1
    assert_close(got, expected, 1e-13, 1e-13)
