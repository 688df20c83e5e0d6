"""Hutchinson, Hutch++ and Frobenius estimates: exact identities, error bars and convergence."""

from __future__ import annotations

import math

import pytest
import torch

from genscope.linalg.operators import HessianOperator, module_functional
from genscope.linalg.trace import frobenius, hutchinson, hutchpp
from tests.cases import CASES
from tests.references import assert_close, dense_loss_hessian, flat_params


def hessian_case(case_id: str) -> tuple[HessianOperator, torch.Tensor]:
    case = CASES[case_id]()
    op = HessianOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    return op, dense_loss_hessian(case.model, case.x, case.y)


def decaying(n: int = 300, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with a fast-decaying indefinite spectrum (Hutch++'s good case)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    ev = torch.arange(1, n + 1, dtype=torch.float64) ** -1.5 * torch.where(
        torch.arange(n) % 7 == 3, -1.0, 1.0
    )
    return q @ torch.diag(ev * 100) @ q.T


def test_exact_when_the_budget_covers_the_dimension() -> None:
    op, dense = hessian_case("mlp")
    est = hutchpp(op, 99)
    assert est.method == "exact" and est.stderr == 0.0
    assert est.num_matvecs == op.shape[0]
    assert_close(est.estimate, torch.trace(dense), 1e-12)
    fro = frobenius(op, 99)
    assert_close(fro.estimate, torch.linalg.matrix_norm(dense), 1e-12)


@pytest.mark.parametrize("case_id", ["mlp", "mlp_batchnorm", "small_cnn"])
@pytest.mark.parametrize("method", ["hutchpp", "hutchinson"])
def test_trace_within_error_bars_over_seeds(case_id: str, method: str) -> None:
    """Over 20 seeds the estimate is within 3 reported standard errors in at least 18 (the
    Hutch++ stderr rests on only 10 residual probes here, so its tails are heavy)."""
    op, dense = hessian_case(case_id)
    exact = float(torch.trace(dense))
    fn = hutchpp if method == "hutchpp" else hutchinson
    budget = min(30, op.shape[0] - 1)
    misses = 0
    zs = []
    for seed in range(20):
        est = fn(op, budget, torch.Generator().manual_seed(seed))
        assert est.method == method and est.num_matvecs == budget
        z = (est.estimate - exact) / est.stderr
        zs.append(z)
        misses += abs(z) > 3
    assert misses <= 2, zs
    assert 0.3 < math.sqrt(sum(z * z for z in zs) / len(zs)) < 2.0, zs  # calibrated stderr


def test_hutchpp_beats_hutchinson_on_decaying_spectra() -> None:
    a = decaying()
    exact = float(torch.trace(a))
    err_pp = [
        abs(hutchpp(a, 60, torch.Generator().manual_seed(s)).estimate - exact) for s in range(10)
    ]
    err_h = [
        abs(hutchinson(a, 60, torch.Generator().manual_seed(s)).estimate - exact) for s in range(10)
    ]
    assert sum(err_pp) < 0.5 * sum(err_h)


def test_hutchpp_converges_with_the_budget() -> None:
    """Error below a target within a matvec budget (the check_estimator_convergence idea)."""
    a = decaying(seed=1)
    exact = float(torch.trace(a))
    errors = {}
    for budget in (15, 60, 240):
        runs = [hutchpp(a, budget, torch.Generator().manual_seed(s)).estimate for s in range(8)]
        errors[budget] = math.sqrt(sum((r - exact) ** 2 for r in runs) / len(runs))
    assert errors[240] < errors[60] < errors[15]
    assert errors[240] < 1e-2 * abs(exact)


def test_frobenius_estimate_and_stderr() -> None:
    a = decaying(n=200, seed=2)
    exact = float(torch.linalg.matrix_norm(a))
    zs = []
    for seed in range(20):
        est = frobenius(a, 30, torch.Generator().manual_seed(seed))
        assert est.num_matvecs == 30
        zs.append((est.estimate - exact) / est.stderr)
    assert sum(abs(z) > 3 for z in zs) <= 1, zs


def test_diagonal_matrix_hutchinson_is_exact() -> None:
    a = torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64))
    est = hutchinson(a, 10, torch.Generator().manual_seed(0))
    assert est.estimate == pytest.approx(1275.0, rel=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-9)


def test_bad_budgets() -> None:
    a = torch.eye(10, dtype=torch.float64)
    with pytest.raises(ValueError):
        hutchpp(a, 2)
    with pytest.raises(ValueError):
        hutchinson(a, 1)
    with pytest.raises(ValueError):
        frobenius(a, 1)
