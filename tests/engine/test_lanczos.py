"""Lanczos: tridiagonal factorization and residual-certified extreme eigenpairs."""

from __future__ import annotations

import pytest
import torch

from genscope.linalg.lanczos import eigsh, lanczos_tridiagonal
from genscope.linalg.operators import HessianOperator, module_functional
from tests.cases import CASES
from tests.references import assert_close, dense_loss_hessian, flat_params


def random_symmetric(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return (a + a.T) / 2


def true_residuals(a: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a @ vectors - vectors * values, dim=0)


def test_tridiagonal_factorization() -> None:
    a = random_symmetric(60)
    v0 = torch.ones(60, dtype=torch.float64)
    out = lanczos_tridiagonal(a, v0, 20)
    q, t = out.basis, out.t
    assert out.num_matvecs == 20 and t.shape == (20, 20)
    assert_close(q.T @ q, torch.eye(20, dtype=torch.float64), 0, 1e-12, what="orthonormal")
    assert_close(q.T @ a @ q, t, 0, 1e-12, what="QᵀAQ = T")
    assert_close(q[:, 0], v0 / v0.norm(), 0, 1e-15, what="first vector")
    assert torch.count_nonzero(torch.triu(t, 2)) == 0


def test_tridiagonal_stops_on_an_invariant_subspace() -> None:
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64))
    out = lanczos_tridiagonal(a, torch.ones(5, dtype=torch.float64), 5)
    assert out.t.shape == (3, 3)  # three distinct eigenvalues
    assert_close(torch.linalg.eigvalsh(out.t), torch.tensor([1.0, 2.0, 3.0]), 1e-12)


def hessian_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense symmetric matrix shaped like a network Hessian: a bulk near zero (both signs)
    and ten well-separated outliers; returns (matrix, eigenvalues)."""
    gen = torch.Generator().manual_seed(seed)
    outliers = torch.tensor([0.3, 0.5, 0.8, 1.2, 2.0, 3.0, 4.5, 6.0, 8.0, 12.0])
    ev = torch.cat([torch.randn(n - 10, generator=gen) * 0.05, outliers]).double()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (q * ev) @ q.T, ev


def test_partial_reorthogonalization_matches_full_in_float64() -> None:
    """Simon 1984: a semi-orthogonal basis gives the same T up to rounding, with fewer passes."""
    a, _ = hessian_like(800)
    v0 = torch.randn(800, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full = lanczos_tridiagonal(a, v0, 80, "full")
    part = lanczos_tridiagonal(a, v0, 80, "partial")
    assert full.reorthogonalized_steps == 80
    assert part.reorthogonalized_steps < 80
    gram = part.basis.T @ part.basis
    eye = torch.eye(80, dtype=torch.float64)
    assert float((gram - eye).abs().max()) <= torch.finfo(torch.float64).eps ** 0.5
    th_f = torch.linalg.eigvalsh(full.t)
    th_p, s_p = torch.linalg.eigh(part.t)
    assert_close(th_p, th_f, 0, 1e-10 * float(th_f.abs().max()), what="Ritz values")
    for power in (0, 1, 2, 5, 9):  # quadrature moments v0ᵀ A^j v0 / ‖v0‖²
        exact = float(v0 @ torch.linalg.matrix_power(a, power) @ v0 / (v0 @ v0))
        moment = float((s_p[0] ** 2 * th_p**power).sum())
        assert abs(moment - exact) <= 1e-10 * max(1.0, abs(exact)), power


def test_partial_reorthogonalization_in_float32_keeps_the_outliers_single() -> None:
    """No spurious copies of converged outliers (the failure mode of plain Lanczos)."""
    a64, ev = hessian_like(800, seed=2)
    a = a64.float()
    v0 = torch.randn(800, generator=torch.Generator().manual_seed(3))
    part = lanczos_tridiagonal(a, v0, 80, "partial")
    theta = torch.linalg.eigvalsh(part.t)
    assert int((theta > 0.25).sum()) == 10
    assert_close(theta[-10:], ev[-10:], 1e-5, what="outliers")
    gram = part.basis.double().T @ part.basis.double()
    eye = torch.eye(80, dtype=torch.float64)
    assert float((gram - eye).abs().max()) <= torch.finfo(torch.float32).eps ** 0.5


def test_reorthogonalization_must_be_known() -> None:
    with pytest.raises(ValueError, match="reorthogonalization"):
        lanczos_tridiagonal(torch.eye(3, dtype=torch.float64), torch.ones(3), 2, "none")


@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("max_basis", [None, 15])
def test_eigsh_on_a_dense_matrix(which: str, max_basis: int | None) -> None:
    a = random_symmetric(200, seed=1)
    ref = torch.linalg.eigvalsh(a)
    ref = ref.flip(0)[:5] if which == "largest" else ref[:5]
    res = eigsh(
        a,
        k=5,
        which=which,
        tol=1e-9,
        max_basis=max_basis,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.converged
    if max_basis is not None:
        assert res.restarts > 0  # thick restarts exercised
    assert_close(res.values, ref, 1e-8, what=f"{which} eigenvalues")
    scale = float(torch.linalg.eigvalsh(a).abs().max())
    true = true_residuals(a, res.values, res.vectors)
    assert bool((true <= 1e-9 * scale * 1.01).all()), true
    assert_close(res.residuals, true, 0, 1e-10 * scale, what="residual estimates")
    assert res.num_matvecs == res.steps


@pytest.mark.parametrize("case_id", ["mlp", "relu_mlp", "mlp_batchnorm", "small_cnn"])
def test_top5_of_tiny_hessians(case_id: str) -> None:
    case = CASES[case_id]()
    dense = dense_loss_hessian(case.model, case.x, case.y)
    op = HessianOperator(module_functional(case.model), flat_params(case.model), case.x, case.y)
    res = eigsh(op, k=5, tol=1e-8, generator=torch.Generator().manual_seed(0))
    ref = torch.linalg.eigvalsh(dense)
    assert res.converged
    assert_close(res.values, ref.flip(0)[:5], 1e-6, what=f"{case_id} top-5")
    low = eigsh(op, k=1, which="smallest", tol=1e-8, generator=torch.Generator().manual_seed(1))
    assert_close(low.values, ref[:1], 1e-6, what=f"{case_id} smallest")
    true = true_residuals(dense, res.values, res.vectors.to(torch.float64))
    assert bool((true <= 1e-8 * float(ref.abs().max()) * 1.01).all())


def test_k_equal_to_the_dimension_and_low_rank() -> None:
    a = torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))
    res = eigsh(a, k=3, tol=1e-12)
    assert_close(res.values, torch.tensor([3.0, 2.0, -1.0]), 1e-12)
    u = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low_rank = u @ torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64)) @ u.T
    res = eigsh(low_rank, k=4, tol=1e-10, generator=torch.Generator().manual_seed(0))
    ref = torch.linalg.eigvalsh(low_rank).flip(0)[:4]
    assert_close(res.values, ref, 1e-8, 1e-10)


def test_budget_exhaustion_is_reported() -> None:
    a = random_symmetric(300, seed=2)
    res = eigsh(a, k=5, tol=1e-12, max_matvecs=12, generator=torch.Generator().manual_seed(0))
    assert not res.converged
    assert res.num_matvecs == 12


def test_bad_arguments() -> None:
    a = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="between 1 and the dimension"):
        eigsh(a, k=5)
    with pytest.raises(ValueError, match="which"):
        eigsh(a, which="middle")
    with pytest.raises(ValueError, match="tol"):
        eigsh(a, tol=0.0)


def test_float32_operator() -> None:
    a = random_symmetric(100, seed=3)
    res = eigsh(a.float(), k=3, tol=1e-4, generator=torch.Generator().manual_seed(0))
    assert res.vectors.dtype == torch.float32
    assert_close(res.values, torch.linalg.eigvalsh(a).flip(0)[:3], 1e-4)
