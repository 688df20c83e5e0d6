"""Weight-space perturbation routines shared by the sharpness and landscape measures.

Everything here works on a *flat* parameter vector θ (the parameters of a params dict,
concatenated in order) and an :class:`Objective`: a forward function, a list of data batches and
a loss on (outputs, targets). The loss is pluggable, so the routines can be checked against
closed forms (a linear model under squared loss) as well as used with mean cross-entropy.

Nothing here touches a model's parameters, ``.grad`` or mode: the forward function receives a
params dict built from views of the flat vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ParamDict = dict[str, torch.Tensor]
ForwardFn = Callable[[ParamDict, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the logits (the GenScope convention)."""
    return F.cross_entropy(outputs, targets)


def normalized_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on logit-normalized outputs (Andriushchenko et al. 2023, §4):
    logits minus their mean, divided by their ℓ2 norm (floor 1e-10), per example."""
    centred = outputs - outputs.mean(dim=1, keepdim=True)
    norm = centred.norm(dim=1, keepdim=True).clamp_min(1e-10)
    return F.cross_entropy(centred / norm, targets)


class FlatParams:
    """Converts between a params dict and one flat vector (same order, same dtype)."""

    def __init__(self, params: ParamDict) -> None:
        self.names = list(params)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.numel = sum(self.sizes)

    def flatten(self, params: ParamDict) -> torch.Tensor:
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> ParamDict:
        chunks = torch.split(flat, self.sizes)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def slices(self) -> dict[str, slice]:
        """The slice of the flat vector that each parameter occupies."""
        out, start = {}, 0
        for n, size in zip(self.names, self.sizes, strict=True):
            out[n] = slice(start, start + size)
            start += size
        return out


@dataclass
class Objective:
    """A loss over fixed batches as a function of the flat parameter vector.

    ``loss(θ, b)`` is the mean loss of batch ``b``; with ``b=None`` it is the mean over all
    examples of all batches (each batch weighted by its size).
    """

    forward: ForwardFn
    flat: FlatParams
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    loss_fn: LossFn = cross_entropy
    num_grad: int = field(default=0, init=False)
    num_forward: int = field(default=0, init=False)

    @property
    def n(self) -> int:
        return sum(int(x.shape[0]) for x, _ in self.batches)

    def _selected(self, batch: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches if batch is None else [self.batches[batch]]

    def _weight(self, x: torch.Tensor, batch: int | None) -> float:
        return 1.0 if batch is not None else x.shape[0] / self.n

    @torch.no_grad()
    def loss(self, theta: torch.Tensor, batch: int | None = None) -> float:
        params = self.flat.unflatten(theta)
        total = 0.0
        for x, y in self._selected(batch):
            self.num_forward += 1
            total += self._weight(x, batch) * float(self.loss_fn(self.forward(params, x), y))
        return total

    @torch.no_grad()
    def accuracy(self, theta: torch.Tensor, batch: int | None = None) -> float:
        params = self.flat.unflatten(theta)
        correct, count = 0.0, 0
        for x, y in self._selected(batch):
            self.num_forward += 1
            correct += float((self.forward(params, x).argmax(dim=1) == y).sum())
            count += int(x.shape[0])
        return correct / max(count, 1)

    @torch.no_grad()
    def loss_and_accuracy(
        self, theta: torch.Tensor, batch: int | None = None
    ) -> tuple[float, float]:
        params = self.flat.unflatten(theta)
        total, correct, count = 0.0, 0.0, 0
        for x, y in self._selected(batch):
            self.num_forward += 1
            out = self.forward(params, x)
            total += self._weight(x, batch) * float(self.loss_fn(out, y))
            correct += float((out.argmax(dim=1) == y).sum())
            count += int(x.shape[0])
        return total, correct / max(count, 1)

    def loss_and_grad(
        self, theta: torch.Tensor, batch: int | None = None
    ) -> tuple[float, torch.Tensor]:
        """The loss and its gradient with respect to the flat vector."""
        total = 0.0
        grad = torch.zeros_like(theta)
        for x, y in self._selected(batch):
            self.num_grad += 1
            leaf = theta.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = self.loss_fn(self.forward(self.flat.unflatten(leaf), x), y)
                (g,) = torch.autograd.grad(loss, leaf)
            w = self._weight(x, batch)
            total += w * float(loss.detach())
            grad.add_(g, alpha=w)
        return total, grad


# --- worst case: projected gradient ascent with the Auto-PGD step-size rule -------------------


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which Auto-PGD may halve its step (Croce & Hein 2020, §3.2):
    p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); w_j = ⌈p_j · steps⌉.

    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 9)) for q in p[1:] if q <= 1.0} - {0})


@dataclass
class WorstCase:
    """The result of a worst-case search in one batch (or the whole objective)."""

    clean: float
    worst: float
    steps: int
    num_grad: int
    z: torch.Tensor  # the maximiser in normalized coordinates, δ = c ⊙ z

    @property
    def increase(self) -> float:
        return self.worst - self.clean


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.sign(g)
    gn = g.norm()
    return g / gn if gn > 0 else torch.zeros_like(g)


def _project(z: torch.Tensor, rho: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return z.clamp(-rho, rho)
    zn = z.norm()
    return z * (rho / zn) if zn > rho else z


def worst_case(
    objective: Objective,
    theta: torch.Tensor,
    scale: torch.Tensor | None,
    rho: float,
    norm: str = "l2",
    steps: int = 20,
    batch: int | None = None,
    momentum: float = 0.75,
) -> WorstCase:
    """max_{‖δ ⊙ c⁻¹‖_p ≤ ρ} L(θ + δ) by projected gradient ascent (Auto-PGD schedule).

    Works in normalized coordinates z = δ / c, where the constraint is the plain ball
    ‖z‖_p ≤ ρ; the gradient there is c ⊙ ∇L. With c = |w| this makes the iterates, and hence the
    result, exactly invariant to any elementwise rescaling of the weights that leaves the
    network function unchanged (Kwon et al. 2021; Andriushchenko et al. 2023, eq. 1). Zero
    initialisation; initial step 2ρ; momentum 0.75; the step is halved (and the search restarted
    from the best point) at the Auto-PGD checkpoints when progress stalls (Croce & Hein 2020,
    Algorithm 1). The best iterate is kept. ``steps`` counts gradient evaluations.

    Args:
        objective: the loss as a function of the flat parameter vector.
        theta: the flat parameters w.
        scale: c (same shape as ``theta``); None means c = 1 (standard sharpness).
        rho: the radius ρ ≥ 0.
        norm: ``"l2"`` or ``"linf"``.
        steps: number of gradient evaluations (≥ 1).
        batch: which batch of the objective (None: all batches together).
        momentum: α of Auto-PGD (0.75).

    Returns:
        The clean and worst losses, the work done and the maximiser z.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    c = torch.ones_like(theta) if scale is None else scale
    grads_before = objective.num_grad

    def evaluate(z: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, g = objective.loss_and_grad(theta + c * z, batch)
        return value, g * c

    z_prev = torch.zeros_like(theta)
    clean, g = evaluate(z_prev)
    best_z, best_f, best_g = z_prev, clean, g
    if rho == 0 or steps < 1:
        return WorstCase(clean, clean, 0, objective.num_grad - grads_before, best_z)
    eta = 2.0 * rho
    checkpoints = set(apgd_checkpoints(steps))
    z = _project(z_prev + eta * _direction(g, norm), rho, norm)
    f_cur = clean
    increases, last_check = 0, 0
    eta_at_check, best_at_check = eta, best_f
    for k in range(1, steps):
        f_new, g_new = evaluate(z)
        if f_new > f_cur:
            increases += 1
        if f_new > best_f:
            best_z, best_f, best_g = z, f_new, g_new
        f_cur, g = f_new, g_new
        if k in checkpoints:
            stalled = increases < 0.75 * (k - last_check)
            unchanged = eta == eta_at_check and best_f == best_at_check
            eta_at_check, best_at_check = eta, best_f
            if stalled or unchanged:
                eta /= 2.0
                z, g, f_cur = best_z, best_g, best_f
                z_prev = best_z
            increases, last_check = 0, k
        step = _project(z + eta * _direction(g, norm), rho, norm)
        z_next = _project(z + momentum * (step - z) + (1 - momentum) * (z - z_prev), rho, norm)
        z_prev, z = z, z_next
    f_last = objective.loss(theta + c * z, batch)  # the last iterate needs no gradient
    if f_last > best_f:
        best_z, best_f = z, f_last
    return WorstCase(clean, best_f, steps, objective.num_grad - grads_before, best_z)


# --- average case ----------------------------------------------------------------------------


@dataclass
class AverageCase:
    """Loss increases under random perturbations: one row per batch, one column per draw."""

    clean: list[float]
    increases: torch.Tensor  # (batches, draws)

    @property
    def mean(self) -> float:
        return float(self.increases.mean())

    @property
    def stderr(self) -> float:
        """Monte-Carlo standard error of the mean given the data (draws vary, batches fixed)."""
        b, k = self.increases.shape
        if k < 2:
            return float("nan")
        var = self.increases.var(dim=1, unbiased=True)  # per batch, over draws
        return float(var.sum().sqrt() / (b * math.sqrt(k)))


def average_case(
    objective: Objective,
    theta: torch.Tensor,
    scale: torch.Tensor | None,
    rho: float,
    draws: int,
    generator: torch.Generator,
    per_batch: bool = True,
) -> AverageCase:
    """E_{δ ~ N(0, ρ² diag(c²))} L(θ + δ) − L(θ), by Monte Carlo (Andriushchenko et al. 2023,
    average-case sharpness S^avg; draws are independent per batch when ``per_batch``)."""
    c = torch.ones_like(theta) if scale is None else scale
    batch_ids: list[int | None] = list(range(len(objective.batches))) if per_batch else [None]
    clean, rows = [], []
    for b in batch_ids:
        base = objective.loss(theta, b)
        clean.append(base)
        row = []
        for _ in range(draws):
            noise = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
            delta = rho * c * noise.to(theta.device, theta.dtype)
            row.append(objective.loss(theta + delta, b) - base)
        rows.append(row)
    return AverageCase(clean, torch.tensor(rows, dtype=torch.float64))


# --- σ search of the PAC-Bayes flatness measures ---------------------------------------------


@dataclass
class SigmaSearch:
    """The outcome of the bisection on σ (Jiang et al. 2020, appendix; measures-research §5.3)."""

    sigma: float
    converged: bool
    lower: float
    upper: float
    accuracy: float  # mean accuracy under noise at the returned σ
    accuracy_stderr: float
    clean_accuracy: float
    evaluations: list[dict[str, float]]


def sigma_search(
    accuracy_under_noise: Callable[[float], tuple[float, float]],
    clean_accuracy: float,
    target: float = 0.1,
    tolerance: float = 0.01,
    upper: float = 2.0,
    depth: int = 15,
) -> SigmaSearch:
    """Largest σ whose mean accuracy under noise deviates from the clean accuracy by ``target``.

    Bisection on [0, upper]: at each midpoint σ the deviation clean − E[acc(σ)] is estimated
    (``accuracy_under_noise(σ)`` returns mean and standard error over the draws); too much
    deviation moves the upper end down, too little the lower end up; stop when the deviation is
    within ``tolerance`` of ``target``. After ``depth`` halvings the last midpoint is returned
    (``converged`` False), as in the reference code.
    """
    lo, hi = 0.0, upper
    evaluations: list[dict[str, float]] = []
    sigma, acc, se, converged = hi / 2, float("nan"), float("nan"), False
    for _ in range(depth):
        sigma = (lo + hi) / 2
        acc, se = accuracy_under_noise(sigma)
        deviation = clean_accuracy - acc
        evaluations.append({"sigma": sigma, "accuracy": acc, "stderr": se})
        if abs(deviation - target) <= tolerance:
            converged = True
            break
        if deviation > target:
            hi = sigma
        else:
            lo = sigma
    return SigmaSearch(sigma, converged, lo, hi, acc, se, clean_accuracy, evaluations)


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() < 2:
        return float(t.mean()), float("nan")
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(t.numel()))
