"""Stochastic trace and Frobenius-norm estimators with standard errors.

* Hutchinson (1989): tr(A) ≈ (1/s) Σ_j z_jᵀ A z_j with Rademacher z_j; unbiased, variance
  (2/s)(‖A‖_F² − Σ_i A_ii²).
* Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal Stochastic Trace Estimation",
  Algorithm 1): with s products, Q = orth(A S) for s/3 Rademacher columns S, then
  tr(A) ≈ tr(Qᵀ A Q) + (3/s) tr(Gᵀ (I − QQᵀ) A (I − QQᵀ) G) for s/3 Rademacher columns G.
  The first term is exact given Q; the standard error reported is that of the Hutchinson part
  (sample standard deviation of its s/3 terms over sqrt(s/3)), conditional on Q. For indefinite
  A (a Hessian away from a minimum) the relative-error guarantee does not apply, but the
  estimator stays unbiased.
* Frobenius norm: ‖A‖_F² = E‖A z‖² for Rademacher or Gaussian z (Hutchinson applied to A², one
  product per sample); the standard error of ‖A‖_F follows by the delta method.

When the budget reaches the dimension ``P``, each estimator computes the exact value from the
``P`` products A e_i instead (``method`` says so, ``stderr`` is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genscope.linalg.heap import holds_heap
from genscope.linalg.operators import Operator, as_operator


@dataclass
class Estimate:
    """A stochastic estimate with its standard error and cost.

    Attributes:
        estimate: the value.
        stderr: its standard error (0 when computed exactly).
        num_matvecs: operator products used.
        method: ``"hutchpp"``, ``"hutchinson"`` or ``"exact"``.
    """

    estimate: float
    stderr: float
    num_matvecs: int
    method: str


def rademacher(
    size: int,
    count: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """A ``(size, count)`` matrix of independent ±1 entries (drawn on the CPU, then moved)."""
    bits = torch.randint(0, 2, (size, count), generator=generator, dtype=torch.int8)
    return bits.to(dtype).mul_(2).sub_(1).to(device)  # ±1 is exact in every float dtype


def _apply(a: Operator, block: torch.Tensor) -> torch.Tensor:
    """A @ block, column by column (the operator decides how to batch)."""
    return a.matvec(block)


def _mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    s = samples.to(torch.float64)
    mean = float(s.mean())
    if s.numel() < 2:
        return mean, float("inf")
    return mean, float(s.std(unbiased=True)) / math.sqrt(s.numel())


def _exact_trace(a: Operator) -> Estimate:
    before = a.num_matvecs
    dense = a.to_dense().to(torch.float64)
    return Estimate(float(torch.diagonal(dense).sum()), 0.0, a.num_matvecs - before, "exact")


@holds_heap
def hutchinson(
    op: Operator | torch.Tensor,
    num_matvecs: int = 99,
    generator: torch.Generator | None = None,
    exact_if_small: bool = True,
) -> Estimate:
    """Hutchinson's trace estimator with Rademacher probes (Hutchinson 1989).

    Args:
        op: a square operator or dense matrix.
        num_matvecs: number of probes s (one product each).
        generator: the source of the probes.
        exact_if_small: compute the exact trace when ``num_matvecs >= P``.

    Returns:
        An :class:`Estimate`: the mean of zᵀAz and its standard error.

    Example:
        >>> a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> round(hutchinson(a, 50, exact_if_small=False).estimate, 10)  # diagonal: exact
        6.0
    """
    a = as_operator(op)
    if num_matvecs < 2:
        raise ValueError(f"num_matvecs must be >= 2, got {num_matvecs}")
    if exact_if_small and num_matvecs >= a.shape[0]:
        return _exact_trace(a)
    before = a.num_matvecs
    z = rademacher(a.shape[0], num_matvecs, generator, a.dtype, a.device)
    samples = (z * _apply(a, z)).sum(dim=0)
    mean, err = _mean_stderr(samples)
    return Estimate(mean, err, a.num_matvecs - before, "hutchinson")


@holds_heap
def hutchpp(
    op: Operator | torch.Tensor,
    num_matvecs: int = 99,
    generator: torch.Generator | None = None,
    exact_if_small: bool = True,
) -> Estimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1) with a standard error.

    The budget s is split into ⌊s/3⌋ columns of S, ⌊s/3⌋ products with Q and the rest for G.

    Args:
        op: a symmetric operator or dense matrix.
        num_matvecs: total products s (at least 3).
        generator: the source of the probes.
        exact_if_small: compute the exact trace when ``num_matvecs >= P``.

    Returns:
        An :class:`Estimate`; ``stderr`` is the standard error of the residual Hutchinson term.

    Example:
        >>> a = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
        >>> est = hutchpp(a, 12, torch.Generator().manual_seed(0))
        >>> abs(est.estimate - 210.0) < 4 * est.stderr + 1e-9
        True
    """
    a = as_operator(op)
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs at least 3 products, got {num_matvecs}")
    if exact_if_small and num_matvecs >= a.shape[0]:
        return _exact_trace(a)
    before = a.num_matvecs
    n_s = num_matvecs // 3
    n_g = num_matvecs - 2 * n_s
    size = a.shape[0]
    s = rademacher(size, n_s, generator, a.dtype, a.device)
    g = rademacher(size, n_g, generator, a.dtype, a.device)
    q, _ = torch.linalg.qr(_apply(a, s))
    low_rank = float(torch.diagonal(q.T @ _apply(a, q)).to(torch.float64).sum())
    g_perp = g - q @ (q.T @ g)
    samples = (g_perp * _apply(a, g_perp)).sum(dim=0)
    mean, err = _mean_stderr(samples)
    return Estimate(low_rank + mean, err, a.num_matvecs - before, "hutchpp")


@holds_heap
def frobenius(
    op: Operator | torch.Tensor,
    num_matvecs: int = 30,
    generator: torch.Generator | None = None,
    exact_if_small: bool = True,
) -> Estimate:
    """‖A‖_F by Hutchinson on A² (one product per Rademacher probe: ‖A z‖² = zᵀA²z).

    The standard error of ‖A‖_F is the delta-method value se(‖A‖_F²) / (2‖A‖_F).

    Example:
        >>> a = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
        >>> frobenius(a, 2).estimate
        5.0
    """
    a = as_operator(op)
    if num_matvecs < 2:
        raise ValueError(f"num_matvecs must be >= 2, got {num_matvecs}")
    before = a.num_matvecs
    if exact_if_small and num_matvecs >= a.shape[0]:
        dense = a.to_dense().to(torch.float64)
        value = float(torch.linalg.matrix_norm(dense))
        return Estimate(value, 0.0, a.num_matvecs - before, "exact")
    z = rademacher(a.shape[0], num_matvecs, generator, a.dtype, a.device)
    samples = torch.linalg.vector_norm(_apply(a, z).to(torch.float64), dim=0) ** 2
    mean, err = _mean_stderr(samples)
    value = math.sqrt(max(mean, 0.0))
    return Estimate(
        value, err / (2 * value) if value > 0 else err, a.num_matvecs - before, "hutchinson"
    )
