"""Curvature measures through a MeasureContext, against dense float64 references."""

from __future__ import annotations

import pytest
import torch

from genscope.errors import BadParameter
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import from_arrays
from genscope.measures.context import AnalysisOptions, MeasureContext
from genscope.measures.curvature import (
    ggn_operator,
    hessian_operator,
    hessian_top_eigenpairs,
)
from genscope.measures.registry import get_measure, resolve_params
from tests.cases import CASES
from tests.engine.test_operators import dense_ggn
from tests.references import assert_close, dense_loss_hessian

CURVATURE_IDS = [
    "hessian.top_eigenvalues",
    "hessian.min_eigenvalue",
    "hessian.trace",
    "hessian.frobenius",
    "hessian.density",
    "ggn.top_eigenvalues",
    "ggn.density",
    "hessian.layer_spectra",
    "stability.sgd",
]


def context(case_id: str, dtype: str = "float64", batch_size: int = 5, **opts) -> MeasureContext:
    case = CASES[case_id]()
    data = from_arrays("tiny", case.x.float().numpy(), case.y.numpy(), num_classes=case.num_classes)
    options = AnalysisOptions(dtype=dtype, batch_size=batch_size, **opts)
    return MeasureContext(LoadedModel(case.model, "module", "0" * 64), data, options)


def run(ctx: MeasureContext, measure_id: str, **params) -> dict:
    m = get_measure(measure_id)
    resolved = resolve_params([m], {measure_id: params} if params else None)[measure_id]
    return m.compute(ctx, resolved)


def dense_h(ctx: MeasureContext) -> torch.Tensor:
    return dense_loss_hessian(ctx.model, ctx.x_train, ctx.y_train)


def test_all_registered() -> None:
    for measure_id in CURVATURE_IDS:
        m = get_measure(measure_id)
        assert m.group == "hessian" and "functional" in m.requires and m.source


@pytest.mark.parametrize("case_id", ["mlp", "mlp_batchnorm", "small_cnn"])
def test_top_and_min_eigenvalues(case_id: str) -> None:
    ctx = context(case_id)
    ev = torch.linalg.eigvalsh(dense_h(ctx))
    out = run(ctx, "hessian.top_eigenvalues", k=5)
    assert_close(
        torch.tensor(out["values"], dtype=torch.float64), ev.flip(0)[:5], 1e-6, what="top-5"
    )
    assert out["value"] == out["values"][0]
    assert out["converged"] and max(out["relative_residuals"]) <= 1e-6
    assert out["num_hvp"] > 0 and out["path"] == "graph"
    assert out["sample"] == {"size": ctx.x_train.shape[0], "whole_set": True}
    low = run(ctx, "hessian.min_eigenvalue")
    assert_close(low["value"], ev[0], 1e-6, what="min")
    assert low["negative"] == bool(ev[0] < 0)


def test_shared_eigenpairs_for_other_measures() -> None:
    ctx = context("relu_mlp")
    dense = dense_h(ctx)
    values, vectors = hessian_top_eigenpairs(ctx, 3)
    assert vectors.shape == (dense.shape[0], 3)
    assert_close(dense @ vectors, vectors * values, 0, 1e-6 * float(values[0]), what="Hv = λv")
    assert hessian_operator(ctx) is hessian_operator(ctx)
    before = hessian_operator(ctx).num_matvecs
    out = run(ctx, "hessian.top_eigenvalues", k=2, tol=1e-6)
    assert hessian_operator(ctx).num_matvecs == before  # served from the cache
    assert_close(torch.tensor(out["values"], dtype=torch.float64), values[:2], 1e-12)


def test_trace_within_error_bars_and_exact_when_small() -> None:
    small_ctx = context("mlp")
    big = run(small_ctx, "hessian.trace")
    assert big["method"] == "exact" and big["num_hvp"] == 39
    assert big["value"] == pytest.approx(float(torch.trace(dense_h(small_ctx))), rel=1e-10)
    ctx = context("small_cnn")
    exact = float(torch.trace(dense_h(ctx)))
    small = run(ctx, "hessian.trace", num_hvp=30)
    assert small["method"] == "hutchpp" and small["num_hvp"] == 30
    assert abs(small["value"] - exact) <= 4 * small["stderr"]
    hutch = run(ctx, "hessian.trace", num_hvp=30, method="hutchinson")
    assert abs(hutch["value"] - exact) <= 4 * hutch["stderr"]


def test_frobenius() -> None:
    ctx = context("mlp")
    exact = float(torch.linalg.matrix_norm(dense_h(ctx)))
    out = run(ctx, "hessian.frobenius", num_hvp=20)
    assert abs(out["value"] - exact) <= 4 * out["stderr"]


def test_ggn_top_eigenvalues() -> None:
    ctx = context("mlp_batchnorm")
    from tests.cases import Case

    case = Case("mlp_batchnorm", ctx.model, ctx.x_train, ctx.y_train, 3)
    ev = torch.linalg.eigvalsh(dense_ggn(case))
    out = run(ctx, "ggn.top_eigenvalues", k=3)
    assert_close(
        torch.tensor(out["values"], dtype=torch.float64), ev.flip(0)[:3], 1e-6, what="GGN top-3"
    )
    assert ggn_operator(ctx).path == "graph"


@pytest.mark.parametrize("measure_id", ["hessian.density", "ggn.density"])
def test_density(measure_id: str) -> None:
    ctx = context("small_cnn")
    out = run(ctx, measure_id, steps=20, probes=2, grid_points=200)
    grid, density = out["grid"], out["density"]
    assert grid.shape == density.shape == (200,)
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=1e-6)
    assert out["num_hvp"] == sum(out["steps"]) and out["probes"] == 2
    assert set(out["outliers"]) >= {"count", "values", "bulk", "rule"}
    ev = torch.linalg.eigvalsh(dense_h(ctx))
    if measure_id == "hessian.density":
        assert out["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-6)


def test_density_with_partial_reorthogonalization_matches_full() -> None:
    """Simon's partial scheme gives the full scheme's quadrature (float64) in fewer passes."""
    full = run(context("small_cnn"), "hessian.density", steps=30, probes=1, grid_points=200)
    part = run(
        context("small_cnn"),
        "hessian.density",
        steps=30,
        probes=1,
        grid_points=200,
        reorthogonalization="partial",
    )
    assert full["reorthogonalized_steps"] == [30]
    assert part["reorthogonalization"] == "partial" and part["reorthogonalized_steps"][0] < 30
    scale = max(abs(v) for v in full["nodes"][0])
    assert_close(torch.tensor(part["nodes"][0]), torch.tensor(full["nodes"][0]), 0, 1e-9 * scale)
    assert_close(torch.tensor(part["weights"][0]), torch.tensor(full["weights"][0]), 0, 1e-9)


def test_layer_spectra_against_dense_blocks() -> None:
    ctx = context("relu_mlp")
    dense = dense_h(ctx)
    out = run(ctx, "hessian.layer_spectra")
    start = 0
    assert [entry["layer"] for entry in out["layers"]] == ["0", "2", "4"]
    for entry in out["layers"]:
        size = entry["num_params"]
        block = dense[start : start + size, start : start + size]
        start += size
        assert entry["top_eigenvalue"] == pytest.approx(
            float(torch.linalg.eigvalsh(block)[-1]), rel=1e-6
        )
        assert entry["trace"] == pytest.approx(float(torch.trace(block)), rel=1e-9)
    assert out["value"] == max(entry["top_eigenvalue"] for entry in out["layers"])


def test_stability() -> None:
    ctx = context("mlp")
    ev = torch.linalg.eigvalsh(dense_h(ctx))
    lam = float(ev[-1])
    out = run(ctx, "stability.sgd", lr=1.0)
    assert out["value"] == pytest.approx(2 / lam, rel=1e-6)
    assert out["stable"] == (lam <= 2.0)
    assert out["trace"] == pytest.approx(float(ev.sum()), rel=1e-9)
    unstable = run(ctx, "stability.sgd", lr=4.0 / lam)
    assert unstable["stable"] is False and unstable["sharpness_ratio"] == pytest.approx(
        2.0, rel=1e-6
    )
    no_lr = run(ctx, "stability.sgd", trace=False)
    assert no_lr["stable"] is None and "trace" not in no_lr


def test_k_larger_than_the_parameter_count() -> None:
    ctx = context("linear")
    with pytest.raises(BadParameter, match="larger than the number of parameters"):
        run(ctx, "hessian.top_eigenvalues", k=16)


def test_float32_default_tolerance_and_untouched_model() -> None:
    ctx = context("mlp_batchnorm", dtype="float32")
    state = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    out = run(ctx, "hessian.top_eigenvalues", k=2)
    assert out["tol"] == 1e-3 and out["converged"]
    ref = torch.linalg.eigvalsh(
        dense_loss_hessian(ctx.model.double(), ctx.x_train.double(), ctx.y_train)
    )
    ctx.model.float()
    assert_close(torch.tensor(out["values"], dtype=torch.float64), ref.flip(0)[:2], 1e-3)
    assert not ctx.model.training
    assert all(p.grad is None for p in ctx.model.parameters())
    for k, v in ctx.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_sample_smaller_than_the_training_set() -> None:
    ctx = context("relu_mlp", hessian_samples=8)
    sample = ctx.hessian_sample()
    out = run(ctx, "hessian.top_eigenvalues", k=1)
    ref = dense_loss_hessian(ctx.model, sample.x, sample.y)
    assert out["sample"] == {"size": 8, "whole_set": False}
    assert out["value"] == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-6)
