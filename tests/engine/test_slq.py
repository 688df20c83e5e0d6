"""Stochastic Lanczos quadrature: exact moments, density normalisation, outliers."""

from __future__ import annotations

import math

import pytest
import torch

from genscope.linalg.operators import GGNOperator, HessianOperator, module_functional
from genscope.linalg.slq import (
    default_sigma2,
    find_outliers,
    slq,
    smoothed_density,
    spectral_density,
)
from genscope.linalg.trace import rademacher
from tests.cases import CASES
from tests.references import assert_close, dense_loss_hessian, flat_params


def spiked(n: int = 400, outliers: tuple[float, ...] = (40.0, 25.0, 15.0), seed: int = 0):
    """A bulk of Marchenko-Pastur-like eigenvalues in [0, 4] plus a few large outliers."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * n, generator=gen, dtype=torch.float64)
    bulk = torch.linalg.eigvalsh(x @ x.T / (2 * n))
    ev = bulk.clone()
    ev[-len(outliers) :] = torch.tensor(sorted(outliers), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(ev) @ q.T, ev


@pytest.mark.parametrize("case_id", ["mlp", "mlp_batchnorm", "small_cnn"])
def test_quadrature_reproduces_the_moments_of_each_probe(case_id: str) -> None:
    """Σ_k τ_k θ_k^j = vᵀ H^j v (unit v) for j ≤ 2m − 1 (Golub & Meurant 2010, Thm 6.2)."""
    case = CASES[case_id]()
    op = HessianOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    dense = dense_loss_hessian(case.model, case.x, case.y)
    m = 6
    probes = rademacher(op.shape[0], 3, torch.Generator().manual_seed(0), torch.float64, op.device)
    quad = slq(op, num_steps=m, num_probes=3, probes=probes)
    assert quad.num_matvecs == 3 * m and quad.steps == [m] * 3
    scale = float(torch.linalg.matrix_norm(dense, 2))
    for p in range(3):
        v = probes[:, p] / probes[:, p].norm()
        assert_close(quad.weights[p].sum(), 1.0, 1e-12)
        w = v.clone()
        for j in range(2 * m):
            exact = float(v @ w)
            approx = float((quad.weights[p] * quad.nodes[p] ** j).sum())
            assert_close(approx, exact, 1e-8, 1e-10 * scale**j, what=f"probe {p} moment {j}")
            w = dense @ w


def test_moments_estimate_traces_of_powers() -> None:
    """With many probes, the averaged moments approach tr(H^j)/P."""
    a, ev = spiked(n=200)
    quad = slq(a, num_steps=20, num_probes=200, generator=torch.Generator().manual_seed(0))
    est = quad.moments(3)
    exact = torch.stack([(ev**j).mean() for j in range(4)])
    assert_close(est[0], 1.0, 1e-12)
    assert_close(est[1:], exact[1:], 0.05, what="moments")


def test_full_lanczos_recovers_the_distinct_eigenvalues() -> None:
    case = CASES["mlp"]()
    op = HessianOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    dense = dense_loss_hessian(case.model, case.x, case.y)
    quad = slq(op, num_steps=op.shape[0], num_probes=1, generator=torch.Generator().manual_seed(0))
    ev = torch.linalg.eigvalsh(dense)
    scale = float(ev.abs().max())
    # Lanczos stops on the invariant subspace: one node per distinct eigenvalue
    distinct = [ev[0]]
    for v in ev[1:]:
        if float(v - distinct[-1]) > 1e-9 * scale:
            distinct.append(v)
    assert len(quad.nodes[0]) == len(distinct)
    assert_close(quad.nodes[0], torch.stack(distinct), 0, 1e-8 * scale, what="nodes")


def test_density_integrates_to_one_and_covers_the_extremes() -> None:
    a, ev = spiked()
    d = spectral_density(a, num_steps=60, num_probes=4, generator=torch.Generator().manual_seed(0))
    step = float(d.grid[1] - d.grid[0])
    assert float(d.density.sum()) * step == pytest.approx(1.0, abs=1e-6)
    assert float(d.grid[0]) < float(ev.min()) and float(d.grid[-1]) > float(ev.max())
    assert d.lambda_max == pytest.approx(float(ev.max()), rel=1e-8)
    assert d.sigma2 == pytest.approx(default_sigma2(d.lambda_min, d.lambda_max))
    assert d.quadrature.num_matvecs == 240
    assert d.log10_density.shape == d.density.shape
    assert float(d.log10_density.max()) == pytest.approx(math.log10(float(d.density.max())))


def test_outliers_are_separated_from_the_bulk() -> None:
    a, ev = spiked()
    d = spectral_density(a, num_steps=60, num_probes=4, generator=torch.Generator().manual_seed(0))
    out = d.outliers
    assert out["count"] == 3
    assert_close(torch.tensor(out["values"]), torch.tensor([40.0, 25.0, 15.0]), 1e-8)
    lo, hi = out["bulk"]
    assert lo >= float(ev.min()) - 1e-6 and hi <= float(ev[-4]) + 1e-6 and hi > 2.5


def test_no_outliers_in_a_continuous_spectrum() -> None:
    a = torch.diag(torch.linspace(-1.0, 3.0, 300, dtype=torch.float64))
    quad = slq(a, num_steps=50, num_probes=3, generator=torch.Generator().manual_seed(0))
    assert find_outliers(quad)["count"] == 0


def test_cell_averaged_density_keeps_narrow_peaks() -> None:
    nodes = torch.tensor([0.0, 0.5, 10.0], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    grid, density, _ = smoothed_density(nodes, weights, grid_points=50, sigma2=1e-8)
    step = float(grid[1] - grid[0])
    assert float(density.sum()) * step == pytest.approx(1.0, abs=1e-9)
    top = int(density.argmax())
    assert abs(float(grid[top])) < step


def test_ggn_density_is_nonnegative() -> None:
    case = CASES["small_cnn"]()
    op = GGNOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    d = spectral_density(op, num_steps=20, num_probes=2, generator=torch.Generator().manual_seed(0))
    assert d.lambda_min > -1e-10
