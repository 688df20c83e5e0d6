"""The all-layer margin solver: minimum-norm perturbations that flip a prediction.

m_F(x, y) = min ‖δ‖ s.t. argmax F(x, δ) ≠ y for the perturbed network F of Wei & Ma (ICLR 2020,
§2, eq. (2.1)), solved for many examples at once (:func:`solve_all_layer`); the same solver on
any perturbed forward pass (:func:`minimum_norm_flips`) gives the minimum L2 input perturbation of
``margin.robust``. The measures built on it live in :mod:`genscope.measures.margins`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genscope.graph import LayerGraph

Progress = Callable[[float, str], None]


def output_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f_y − max_{j≠y} f_j for each row; negative exactly when the example is misclassified
    (ties count as misclassified: margin 0).

    >>> output_margins(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0]))
    tensor([1.])
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


@dataclass
class AllLayerResult:
    """Per-example all-layer margins and what the solver did.

    Attributes:
        values: m_F(x, y) per example (float64): 0 for misclassified examples, NaN where no
            perturbation that flips the prediction could be found (counted in ``unconfirmed``).
        correct: whether the example is correctly classified (margin > 0, ties misclassified).
        confirmed: whether the re-run perturbed forward pass at the reported perturbation flips
            the prediction (False for misclassified examples, whose value is 0 by definition).
        shares: (n, points) share ‖δ_i‖² / ‖δ‖² of each perturbation point at the reported
            perturbation (zeros for misclassified or unconfirmed examples).
        iterations: solver iterations per example.
        points: names of the perturbation points (``input`` first when included).
        perturbations: the reported perturbations, flat (n, total size), when asked for.
    """

    values: torch.Tensor
    correct: torch.Tensor
    confirmed: torch.Tensor
    shares: torch.Tensor
    iterations: torch.Tensor
    points: list[str]
    perturbations: torch.Tensor | None = None

    @property
    def unconfirmed(self) -> int:
        return int((self.correct & ~self.confirmed).sum())


PerturbedForward = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


def perturbed_forward(graph: LayerGraph, input_layer: bool = False) -> PerturbedForward:
    """F(x, δ) of Wei & Ma (2020, §2): h_i = f_i(h_{i−1}) + δ_i ‖h_{i−1}‖ at every layer-function
    output; with ``input_layer`` a layer 0 perturbs the input, x ← x + δ_0 ‖x‖ (their §5)."""

    if not input_layer:
        return lambda x, deltas: graph(x, deltas)

    def forward(x: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
        norm = x.reshape(x.shape[0], -1).norm(dim=1)
        x = x + deltas[0] * norm.reshape((-1,) + (1,) * (x.dim() - 1))
        return graph(x, deltas[1:])

    return forward


def solve_all_layer(
    graph: LayerGraph,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    patience: int = 5,
    batch_size: int = 0,
    overshoot: float = 0.01,
    classes: int = 3,
    input_layer: bool = False,
    keep_perturbations: bool = False,
    progress: Progress | None = None,
) -> AllLayerResult:
    """All-layer margins m_F(x, y) = min ‖δ‖ s.t. argmax F(x, δ) ≠ y (Wei & Ma 2020, eq. (2.1)),
    for many examples at once, each with its own perturbation variables.

    The solver linearises g_j(δ) = F_y − F_j at the current δ for the nearest of the top wrong
    classes j (the multi-class step of DeepFool, Moosavi-Dezfooli et al. 2016). While the
    iterate does not flip the prediction it steps to the linearised boundary {g_j = −κ},
    κ = ``overshoot`` · g(0) (DeepFool from the current point); once it flips, it moves to the
    projection of the origin onto that boundary, δ ← ((∇g_j·δ − g_j − κ) / ‖∇g_j‖²) ∇g_j, which
    slides along the boundary towards smaller norms. The fixed points are the KKT points of
    min ‖δ‖² s.t. g_j(δ) = −κ, and for a single affine layer the first step is exact. Every
    iterate that flips the prediction is a candidate; the smallest is kept. An example stops when
    its best norm changed by less than ``tol`` (relative) over ``patience`` iterations. The best
    candidate is then shrunk along its ray by bisection to the boundary, and the perturbed forward
    pass is re-run at the reported perturbation to confirm that the prediction flips.

    Args:
        graph: the model's :class:`~genscope.graph.LayerGraph`.
        x, y: inputs and labels (on the model's device and dtype).
        max_iter: iterations per example at most.
        tol, patience: the stopping rule on the relative change of the best norm.
        batch_size: examples optimised together; 0 picks it from the perturbation size.
        overshoot: the linearised target margin −κ as a fraction of the clean margin.
        input_layer: include the input as layer 0 (robust all-layer margin).
        keep_perturbations: return the reported perturbations (flat, on the CPU).
        progress: called with (fraction done, message).

    Returns:
        An :class:`AllLayerResult`.
    """
    forward = perturbed_forward(graph, input_layer)
    shapes = [tuple(x.shape[1:])] if input_layer else []
    shapes += [layer.output_shape for layer in graph.layers]
    points = (["input"] if input_layer else []) + graph.points
    return minimum_norm_flips(
        forward,
        x,
        y,
        shapes,
        points,
        max_iter=max_iter,
        tol=tol,
        patience=patience,
        batch_size=batch_size,
        overshoot=overshoot,
        classes=classes,
        keep_perturbations=keep_perturbations,
        progress=progress,
    )


def minimum_norm_flips(
    forward: PerturbedForward,
    x: torch.Tensor,
    y: torch.Tensor,
    shapes: list[tuple[int, ...]],
    points: list[str],
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    patience: int = 5,
    batch_size: int = 0,
    overshoot: float = 0.01,
    classes: int = 3,
    keep_perturbations: bool = False,
    progress: Progress | None = None,
) -> AllLayerResult:
    """min ‖δ‖ s.t. argmax forward(x, δ) ≠ y for perturbations δ of the given ``shapes``: the
    solver behind :func:`solve_all_layer` (see there), for any perturbed forward pass."""
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    n = x.shape[0]
    if batch_size <= 0:
        batch_size = int(min(4096, max(32, (1 << 24) // max(total, 1))))
    values = torch.zeros(n, dtype=torch.float64)
    correct = torch.zeros(n, dtype=torch.bool)
    confirmed = torch.zeros(n, dtype=torch.bool)
    shares = torch.zeros((n, len(shapes)), dtype=torch.float64)
    iterations = torch.zeros(n, dtype=torch.long)
    kept = torch.zeros((n, total), dtype=torch.float64) if keep_perturbations else None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        chunk = _Chunk(forward, x[start:stop], y[start:stop], shapes, sizes)
        chunk.solve(max_iter, tol, patience, overshoot, classes)
        v, c, ok, sh, it, final = chunk.finish()
        if kept is not None:
            kept[start:stop] = final
        values[start:stop], correct[start:stop], confirmed[start:stop] = v, c, ok
        shares[start:stop], iterations[start:stop] = sh, it
        if progress is not None:
            progress(stop / n, f"{stop}/{n} examples")
    return AllLayerResult(values, correct, confirmed, shares, iterations, points, kept)


class _Chunk:
    """The solver state of one batch of examples: flat perturbations D of shape (B, P)."""

    def __init__(
        self,
        forward: PerturbedForward,
        x: torch.Tensor,
        y: torch.Tensor,
        shapes: list[tuple[int, ...]],
        sizes: list[int],
    ) -> None:
        self.forward, self.x, self.y, self.shapes, self.sizes = forward, x, y, shapes, sizes
        b, p = x.shape[0], sum(sizes)
        self.delta = x.new_zeros((b, p))
        self.best = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        self.best_delta = x.new_zeros((b, p))
        self.iterations = torch.zeros(b, dtype=torch.long, device=x.device)
        with torch.no_grad():
            self.margin0 = output_margins(self.logits(x, self.delta), y)
        self.correct = self.margin0 > 0

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(flat, self.sizes, dim=1)
        return [p.reshape((flat.shape[0], *s)) for p, s in zip(parts, self.shapes, strict=True)]

    def logits(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return self.forward(x, self.split(flat))

    @staticmethod
    def _step(
        logits: torch.Tensor,
        y: torch.Tensor,
        d: torch.Tensor,
        kappa: torch.Tensor,
        classes: int,
        origin: torch.Tensor,
    ) -> torch.Tensor:
        """The next iterate, for the nearest of the ``classes`` top wrong classes j
        (g_j = F_y − F_j, DeepFool's choice) linearised at δ: where ``origin`` (the iterate
        flips), the projection of the origin onto {g_j = −κ}, which slides along the boundary
        towards smaller norms; elsewhere the projection of δ itself (a DeepFool step), which
        approaches the boundary without the two-cycles that projecting the origin can fall
        into across ReLU regions."""
        true = logits.gather(1, y[:, None]).squeeze(1)
        wrong = logits.detach().scatter(1, y[:, None], float("-inf"))
        k = min(classes, logits.shape[1] - 1)
        top = wrong.topk(k, dim=1).indices
        best_step, best_dist = None, None
        for c in range(k):
            g = true - logits.gather(1, top[:, c : c + 1]).squeeze(1)
            (grad,) = torch.autograd.grad(g.sum(), d, retain_graph=c < k - 1)
            with torch.no_grad():
                g = g.detach()
                gg = (grad * grad).sum(1).clamp_min(torch.finfo(grad.dtype).tiny)
                from_origin = ((grad * d).sum(1) - g - kappa) / gg
                from_here = -(g + kappa) / gg
                coef = torch.where(origin, from_origin, from_here)
                dist = coef.abs() * gg.sqrt()
                step = coef[:, None] * grad + torch.where(origin, 0.0, 1.0)[:, None] * d
                if best_step is None or best_dist is None:
                    best_step, best_dist = step, dist
                else:
                    closer = dist < best_dist
                    best_step = torch.where(closer[:, None], step, best_step)
                    best_dist = torch.where(closer, dist, best_dist)
        assert best_step is not None
        return best_step

    def solve(
        self, max_iter: int, tol: float, patience: int, overshoot: float, classes: int
    ) -> None:
        active = self.correct.clone()
        reference = self.best.clone()
        stall = torch.zeros_like(self.iterations)
        for _ in range(max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x, y = self.x[idx], self.y[idx]
            d = self.delta[idx].detach().requires_grad_(True)
            kappa = overshoot * self.margin0[idx]
            with torch.enable_grad():
                logits = self.logits(x, d)
                g = output_margins(logits, y)
                flips = output_margins(logits.detach(), y) <= 0
                step = self._step(logits, y, d, kappa, classes, flips)
            with torch.no_grad():
                d = d.detach()
                g = g.detach()
                self.iterations[idx] += 1
                norm = d.norm(dim=1)
                better = (g <= 0) & (norm < self.best[idx])
                if bool(better.any()):
                    self.best[idx[better]] = norm[better]
                    self.best_delta[idx[better]] = d[better]
                self.delta[idx] = step
                best = self.best[idx]
                moved = ~(reference[idx] - best <= tol * best)
                reference[idx[moved]] = best[moved]
                stall[idx] = torch.where(moved, torch.zeros_like(stall[idx]), stall[idx] + 1)
                done = torch.isfinite(best) & (stall[idx] >= patience)
                active[idx[done]] = False

    @torch.no_grad()
    def finish(self) -> tuple[torch.Tensor, ...]:
        """Shrink each best perturbation along its ray to the boundary, re-run the perturbed pass
        there and confirm the flip; examples without a candidate try the last iterate scaled up."""
        missing = self.correct & ~torch.isfinite(self.best)
        if bool(missing.any()):
            idx = missing.nonzero().squeeze(1)
            for factor in (1.0, 1.5, 2.0, 4.0, 8.0, 16.0):
                d = self.delta[idx] * factor
                flips = output_margins(self.logits(self.x[idx], d), self.y[idx]) <= 0
                found = idx[flips]
                self.best_delta[found] = d[flips]
                self.best[found] = d[flips].norm(dim=1)
                idx = idx[~flips]
                if idx.numel() == 0:
                    break
        has = self.correct & torch.isfinite(self.best)
        idx = has.nonzero().squeeze(1)
        values = torch.zeros_like(self.best, dtype=torch.float64)
        confirmed = torch.zeros_like(self.correct)
        shares = torch.zeros((self.x.shape[0], len(self.sizes)), dtype=torch.float64)
        reported = torch.zeros((self.x.shape[0], sum(self.sizes)), dtype=torch.float64)
        if idx.numel():
            x, y, d = self.x[idx], self.y[idx], self.best_delta[idx]
            lo = torch.zeros(idx.numel(), dtype=d.dtype, device=d.device)
            hi = torch.ones_like(lo)
            for _ in range(20):
                mid = (lo + hi) / 2
                flips = output_margins(self.logits(x, d * mid[:, None]), y) <= 0
                hi = torch.where(flips, mid, hi)
                lo = torch.where(flips, lo, mid)
            final = d * hi[:, None]
            flips = output_margins(self.logits(x, final), y) <= 0
            confirmed[idx] = flips
            reported[idx.cpu()] = final.double().cpu()
            values[idx] = final.norm(dim=1).double()
            parts = torch.split(final.double() ** 2, self.sizes, dim=1)
            sq = torch.stack([p.sum(1) for p in parts], dim=1)
            shares[idx.cpu()] = (sq / sq.sum(1, keepdim=True).clamp_min(1e-300)).cpu()
        values[self.correct & ~confirmed] = math.nan
        return (
            values.cpu(),
            self.correct.cpu(),
            confirmed.cpu(),
            shares,
            self.iterations.cpu(),
            reported,
        )
