"""Hessian and GGN operators against dense float64 references on the tiny shared cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genscope.linalg.operators import (
    GGNOperator,
    HessianOperator,
    as_operator,
    layer_groups,
    module_functional,
)
from tests.cases import CASES, Case
from tests.references import assert_close, dense_loss_hessian, flat_params

CASE_IDS = ["mlp", "relu_mlp", "mlp_batchnorm", "small_cnn"]
PATHS = ["graph", "double_backward", "forward_over_reverse", "forward_over_reverse_vmap"]


def hessian_op(case: Case, **kwargs) -> HessianOperator:
    return HessianOperator(
        module_functional(case.model), flat_params(case.model), case.x, case.y, **kwargs
    )


def dense_ggn(case: Case) -> torch.Tensor:
    """Σ_i (1/n) J_iᵀ (diag p_i − p_i p_iᵀ) J_i built from the full Jacobian (torch.func.jacrev)."""
    params = flat_params(case.model)
    names = list(params)
    sizes = [params[n].numel() for n in names]
    shapes = [params[n].shape for n in names]
    buffers = {k: v.detach() for k, v in case.model.named_buffers()}

    def logits(flat: torch.Tensor) -> torch.Tensor:
        p = {
            n: c.reshape(s) for n, c, s in zip(names, torch.split(flat, sizes), shapes, strict=True)
        }
        return torch.func.functional_call(case.model, (p, buffers), (case.x,))

    flat = torch.cat([params[n].reshape(-1) for n in names])
    jac = torch.func.jacrev(logits)(flat)  # (n, C, P)
    probs = torch.softmax(logits(flat), dim=1)
    h_loss = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    n = case.x.shape[0]
    return torch.einsum("ncp,ncd,ndq->pq", jac, h_loss, jac) / n


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_hessian_matches_dense(case_id: str, path: str) -> None:
    case = CASES[case_id]()
    op = hessian_op(case, chunk_size=5, path=path)
    assert op.path == path
    assert_close(
        op.to_dense(),
        dense_loss_hessian(case.model, case.x, case.y),
        1e-10,
        1e-12,
        what=f"{case_id}/{path}",
    )


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_chunking_gives_the_mean_over_the_whole_sample(chunk_size: int) -> None:
    case = CASES["mlp"]()
    op = hessian_op(case, chunk_size=chunk_size)
    assert len(op.chunks) == -(-case.x.shape[0] // chunk_size)
    assert_close(op.to_dense(), dense_loss_hessian(case.model, case.x, case.y), 1e-10, 1e-12)


@pytest.mark.parametrize("path", ["graph", "double_backward"])
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_ggn_matches_jt_hl_j(case_id: str, path: str) -> None:
    case = CASES[case_id]()
    op = GGNOperator(
        module_functional(case.model),
        flat_params(case.model),
        case.x,
        case.y,
        chunk_size=5,
        path=path,
    )
    dense = op.to_dense()
    assert_close(dense, dense_ggn(case), 1e-10, 1e-12, what=f"ggn {case_id}")
    assert float(torch.linalg.eigvalsh(dense).min()) > -1e-12  # positive semi-definite


def test_ggn_of_a_linear_model_is_its_hessian() -> None:
    case = CASES["linear"]()
    ggn = GGNOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    assert_close(ggn.to_dense(), dense_loss_hessian(case.model, case.x, case.y), 1e-10, 1e-12)


def test_blocks_are_diagonal_blocks_of_the_dense_hessian() -> None:
    case = CASES["relu_mlp"]()
    full = dense_loss_hessian(case.model, case.x, case.y)
    params = flat_params(case.model)
    offsets, start = {}, 0
    for name, p in params.items():
        offsets[name] = (start, start + p.numel())
        start += p.numel()
    for layer, names in layer_groups(list(params)).items():
        op = hessian_op(case, names=names)
        idx = torch.cat([torch.arange(*offsets[n]) for n in names])
        assert_close(op.to_dense(), full[idx][:, idx], 1e-10, 1e-12, what=f"layer {layer}")


def test_layer_groups_by_module_prefix() -> None:
    names = ["0.weight", "0.bias", "2.weight", "head.fc.weight", "scale"]
    assert layer_groups(names) == {
        "0": ["0.weight", "0.bias"],
        "2": ["2.weight"],
        "head.fc": ["head.fc.weight"],
        "scale": ["scale"],
    }


def test_block_products_and_counter() -> None:
    case = CASES["mlp"]()
    op = hessian_op(case, path="forward_over_reverse_vmap")
    gen = torch.Generator().manual_seed(0)
    block = torch.randn(op.shape[0], 4, generator=gen, dtype=torch.float64)
    dense = dense_loss_hessian(case.model, case.x, case.y)
    assert_close(op @ block, dense @ block, 1e-10, 1e-12)
    assert_close(op @ block[:, 0], dense @ block[:, 0], 1e-10, 1e-12)
    assert op.num_matvecs == 5
    with pytest.raises(ValueError, match="cannot multiply"):
        op @ torch.zeros(op.shape[0] + 1, dtype=torch.float64)


def test_caller_model_is_untouched() -> None:
    case = CASES["mlp_batchnorm"]()
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    for path in PATHS:
        op = hessian_op(case, path=path)
        op @ torch.ones(op.shape[0], dtype=torch.float64)
    GGNOperator(
        module_functional(case.model), flat_params(case.model), case.x, case.y
    ) @ torch.ones(op.shape[0], dtype=torch.float64)
    assert not case.model.training
    assert all(p.grad is None for p in case.model.parameters())
    for k, v in case.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_float32() -> None:
    case = CASES["small_cnn"](dtype=torch.float32)
    op = hessian_op(case)
    assert op.dtype == torch.float32
    dense = op.to_dense()
    assert dense.dtype == torch.float32
    model64 = case.model.double()
    ref = dense_loss_hessian(model64, case.x.double(), case.y)
    assert_close(dense, ref, 1e-3, 1e-5)


def test_auto_path_records_its_choice() -> None:
    case = CASES["mlp"]()
    op = hessian_op(case, chunk_size=4)
    assert op.path == "graph"
    assert op.path_info["graph_bytes_estimate"] > 0
    bounded = hessian_op(case, chunk_size=4, memory_budget=0)
    assert bounded.path in ("double_backward", "forward_over_reverse", "forward_over_reverse_vmap")
    assert set(bounded.path_info["timings_s"]) == {
        "double_backward",
        "forward_over_reverse",
        "forward_over_reverse_vmap",
    }
    assert_close(bounded.to_dense(), op.to_dense(), 1e-10, 1e-12)
    assert bounded.describe()["num_chunks"] == 4
    op.release()
    assert_close(
        op @ torch.ones(op.shape[0], dtype=torch.float64),
        bounded @ torch.ones(op.shape[0], dtype=torch.float64),
        1e-10,
        1e-12,
    )


def test_exported_graph_module() -> None:
    case = CASES["mlp_batchnorm"]()
    program = torch.export.export(case.model, (case.x,))
    module = program.module()
    op = HessianOperator(module_functional(module), flat_params(module), case.x, case.y)
    assert_close(op.to_dense(), dense_loss_hessian(case.model, case.x, case.y), 1e-10, 1e-12)


def test_dense_tensor_as_operator_and_bad_inputs() -> None:
    a = torch.eye(3, dtype=torch.float64)
    assert as_operator(a).shape == (3, 3)
    with pytest.raises(ValueError, match="square"):
        as_operator(torch.zeros(2, 3))
    case = CASES["mlp"]()
    with pytest.raises(ValueError, match="unknown parameter"):
        hessian_op(case, names=["nope"])
    with pytest.raises(ValueError, match="unknown path"):
        hessian_op(case, path="magic")
    with pytest.raises(ValueError, match="chunk_size"):
        hessian_op(case, chunk_size=0)


def test_loss_is_mean_cross_entropy() -> None:
    """The operator's loss convention matches F.cross_entropy(reduction='mean')."""
    case = CASES["linear"]()
    op = hessian_op(case, chunk_size=5)
    leaves = op._leaves()
    total = sum(
        op._weight(x) * F.cross_entropy(op._call(leaves, x), y).item() for x, y in op.chunks
    )
    with torch.no_grad():
        expected = F.cross_entropy(case.model(case.x), case.y).item()
    assert total == pytest.approx(expected, rel=1e-12)
