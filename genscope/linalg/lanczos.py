"""Lanczos with full reorthogonalization: extreme eigenpairs and tridiagonal factorizations.

:func:`lanczos_tridiagonal` runs ``m`` steps of the symmetric Lanczos process (Golub & Van Loan,
*Matrix Computations*, 4th ed., Algorithm 10.1.1) with full reorthogonalization (classical
Gram-Schmidt applied twice, "twice is enough": Giraud, Langou & Rozložník 2005) and returns the
tridiagonal T_m, as stochastic Lanczos quadrature needs.

:func:`eigsh` finds the ``k`` largest (or smallest) algebraic eigenvalues with the thick-restart
Lanczos method (Wu & Simon 2000; Saad, *Numerical Methods for Large Eigenvalue Problems*, 2nd
ed., §6.3 and §7.2): the basis grows to ``max_basis`` vectors, then the wanted Ritz vectors are
kept and the process continues from the last Lanczos vector, the projected matrix becoming
arrowhead-plus-tridiagonal. It stops when every wanted Ritz pair (θ_i, y_i) has the residual
‖A y_i − θ_i y_i‖ = β_m |e_mᵀ s_i| (Saad 2011, Proposition 6.8) at most ``tol · max|θ|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genscope.linalg.operators import Operator, as_operator

_WHICH = ("largest", "smallest")


@dataclass
class EigenResult:
    """Eigenpairs with their diagnostics.

    Attributes:
        values: the eigenvalues (float64, CPU): descending for ``which="largest"``, ascending
            for ``"smallest"``.
        vectors: unit eigenvectors as the columns of a ``(P, k)`` matrix (operator dtype).
        residuals: ‖A v − λ v‖ of each pair from the Lanczos relation (float64, CPU).
        num_matvecs: operator products used.
        converged: every residual is at most ``tol · scale``.
        tol: the relative tolerance asked for.
        scale: the largest |Ritz value| seen (an estimate of ‖A‖₂), the tolerance's reference.
        steps: Lanczos steps, over all restarts.
        restarts: thick restarts performed.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    num_matvecs: int
    converged: bool
    tol: float
    scale: float
    steps: int
    restarts: int


def _start_vector(
    size: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
    v0: torch.Tensor | None,
) -> torch.Tensor:
    if v0 is None:
        v0 = torch.randn(size, generator=generator, dtype=torch.float64)
    v0 = v0.to(device=device, dtype=dtype)
    norm = torch.linalg.vector_norm(v0)
    if not bool(norm > 0):
        raise ValueError("the start vector is zero")
    return v0 / norm


def _orthogonalize(w: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project the orthonormal ``rows`` out of ``w`` twice; return (w, coefficients).

    The basis is stored as rows (contiguous) so that both products are plain GEMVs.
    """
    h = rows @ w
    w = w - rows.T @ h
    h2 = rows @ w
    return w - rows.T @ h2, h + h2


def _new_direction(rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """A random unit vector orthogonal to ``rows``, or None if they span the space."""
    size = rows.shape[1]
    for _ in range(3):
        r = torch.randn(size, generator=generator, dtype=torch.float64)
        r = r.to(device=rows.device, dtype=rows.dtype)
        r, _ = _orthogonalize(r, rows)
        norm = torch.linalg.vector_norm(r)
        if float(norm) > 1e-3:
            return r / norm
    return None


@dataclass
class Tridiagonal:
    """The outcome of m Lanczos steps: A Q = Q T + β q_{m+1} e_mᵀ.

    Attributes:
        t: the m×m symmetric tridiagonal matrix T (float64, CPU).
        basis: the orthonormal Lanczos vectors Q, shape ``(P, m)``.
        beta: β, the norm of the next (unnormalised) Lanczos vector; the Ritz pair
            (θ_i, Q s_i) has residual β |s_i[m − 1]|.
        num_matvecs: products used.
    """

    t: torch.Tensor
    basis: torch.Tensor
    beta: float
    num_matvecs: int


def lanczos_tridiagonal(
    op: Operator | torch.Tensor, v0: torch.Tensor, num_steps: int
) -> Tridiagonal:
    """``num_steps`` Lanczos steps from ``v0`` with full reorthogonalization.

    Golub & Van Loan (2013), Algorithm 10.1.1: the three-term recurrence, then one pass of
    complete reorthogonalization against every previous Lanczos vector (§10.3.1; one
    Gram-Schmidt pass after the local recurrence keeps orthogonality at the rounding level,
    Parlett, *The Symmetric Eigenvalue Problem*, §13.8). Stops early on an invariant subspace
    (β_j ≈ 0).

    Args:
        op: a symmetric operator or a dense symmetric matrix.
        v0: the start vector (normalised here).
        num_steps: the number m of Lanczos steps (products), at most P are taken.

    Returns:
        A :class:`Tridiagonal` with m ≤ ``num_steps``.

    Example:
        >>> a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> out = lanczos_tridiagonal(a, torch.ones(3, dtype=torch.float64), 3)
        >>> torch.linalg.eigvalsh(out.t).round(decimals=6).tolist()
        [1.0, 2.0, 3.0]
    """
    a = as_operator(op)
    size = a.shape[0]
    steps = min(num_steps, size)
    if steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    q = torch.zeros(steps, size, dtype=a.dtype, device=a.device)  # Lanczos vectors as rows
    q[0] = _start_vector(size, a.dtype, a.device, None, v0)
    t = torch.zeros(steps, steps, dtype=torch.float64)
    before = a.num_matvecs
    m = steps
    scale = 0.0
    beta = 0.0
    for j in range(steps):
        w = a.matvec(q[j])
        alpha = torch.dot(q[j], w)
        w = w - alpha * q[j]
        if j > 0:
            w = w - beta * q[j - 1]
        h = q[: j + 1] @ w  # complete reorthogonalization, one pass
        w = w - q[: j + 1].T @ h
        alpha_j = float(alpha + h[j])
        t[j, j] = alpha_j
        beta = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha_j), beta)
        if j + 1 == steps:
            break
        if beta <= 1e-10 * max(scale, 1e-300):
            m = j + 1
            break
        q[j + 1] = w / beta
        t[j, j + 1] = t[j + 1, j] = beta
    return Tridiagonal(t[:m, :m], q[:m].T, beta, a.num_matvecs - before)


def _select(theta: torch.Tensor, count: int, which: str) -> torch.Tensor:
    """Indices of the ``count`` wanted Ritz values (theta ascending from eigh)."""
    n = theta.shape[0]
    count = min(count, n)
    if which == "largest":
        return torch.arange(n - 1, n - 1 - count, -1)
    return torch.arange(count)


def eigsh(
    op: Operator | torch.Tensor,
    k: int = 1,
    which: str = "largest",
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> EigenResult:
    """The ``k`` largest or smallest algebraic eigenpairs of a symmetric operator.

    Thick-restart Lanczos with full reorthogonalization (Wu & Simon 2000; Saad 2011, §6.3).
    Convergence: every wanted pair's residual ‖A y − θ y‖ ≤ ``tol`` · max|θ| (the Lanczos
    residual bound, Saad 2011, Prop. 6.8; exact up to rounding with full reorthogonalization).

    Args:
        op: a symmetric :class:`Operator` or a dense symmetric matrix.
        k: number of eigenpairs (at most the dimension).
        which: ``"largest"`` (largest algebraic) or ``"smallest"`` (most negative).
        tol: relative residual tolerance.
        max_matvecs: product budget (default ``max(300, 30 · max_basis)``, at most ``50·P``).
        max_basis: Lanczos vectors kept before a thick restart (default
            ``max(2k + 20, 40)``, at most ``P``).
        v0: start vector (default Gaussian from ``generator``).
        generator: the source of randomness for the start vector and breakdown recovery.

    Returns:
        An :class:`EigenResult`; ``converged`` is False when the budget ran out first.

    Raises:
        ValueError: ``k`` outside ``[1, P]``, an unknown ``which``, or a non-positive ``tol``.

    Example:
        >>> a = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> eigsh(a, k=2, tol=1e-10).values.round(decimals=8).tolist()
        [10.0, 9.0]
    """
    a = as_operator(op)
    size = a.shape[0]
    if not 1 <= k <= size:
        raise ValueError(f"k must be between 1 and the dimension {size}, got {k}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    m = min(size, max_basis or max(2 * k + 20, 40))
    m = max(m, min(size, k + 2))
    budget = max_matvecs or min(max(300, 30 * m), 50 * size)
    keep = min(m - 2, k + max(2, (m - k) // 2)) if m < size else m

    q = torch.zeros(m + 1, size, dtype=a.dtype, device=a.device)  # Lanczos vectors as rows
    q[0] = _start_vector(size, a.dtype, a.device, generator, v0)
    t = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    before = a.num_matvecs
    j = 0
    steps = 0
    restarts = 0
    scale = 0.0
    theta = s = wanted = None
    residuals = torch.full((k,), float("inf"), dtype=torch.float64)
    converged = False
    while True:
        w = a.matvec(q[j])
        steps += 1
        w, h = _orthogonalize(w, q[: j + 1])
        t[j, j] = float(h[j])
        beta = float(torch.linalg.vector_norm(w))
        theta, s = torch.linalg.eigh(t[: j + 1, : j + 1])
        scale = max(scale, float(theta.abs().max()))
        wanted = _select(theta, k, which)
        exhausted = j + 1 == size
        residuals = beta * s[j, wanted].abs()
        if exhausted:
            residuals = torch.zeros_like(residuals)
        if len(wanted) == k and bool((residuals <= tol * scale).all()):
            converged = True
            break
        if a.num_matvecs - before >= budget:
            break
        if beta <= 1e-12 * max(scale, 1e-300):  # invariant subspace: continue elsewhere
            r = _new_direction(q[: j + 1], generator)
            if r is None:
                residuals = torch.zeros_like(residuals)
                converged = len(wanted) == k
                break
            beta, w = 0.0, r
        else:
            w = w / beta
        if j + 1 < m:
            q[j + 1] = w
            t[j, j + 1] = t[j + 1, j] = beta
            j += 1
            continue
        # thick restart: keep the wanted Ritz vectors, continue from the next Lanczos vector
        restarts += 1
        kept = _select(theta, keep, which)
        s_kept = s[:, kept]
        ritz = s_kept.T.to(a.dtype).to(a.device) @ q[: j + 1]
        coupling = beta * s_kept[j, :]
        q[: len(kept)] = ritz
        q[len(kept)] = w
        q[len(kept) + 1 :] = 0
        t.zero_()
        n_kept = len(kept)
        t[:n_kept, :n_kept] = torch.diag(theta[kept])
        t[n_kept, :n_kept] = coupling
        t[:n_kept, n_kept] = coupling
        j = n_kept

    assert theta is not None and s is not None and wanted is not None
    vectors = q[: j + 1].T @ s[:, wanted].to(a.dtype).to(a.device)
    return EigenResult(
        values=theta[wanted].clone(),
        vectors=vectors,
        residuals=residuals.clone(),
        num_matvecs=a.num_matvecs - before,
        converged=converged,
        tol=tol,
        scale=scale,
        steps=steps,
        restarts=restarts,
    )
