"""Operator norms of a network's affine layers, BatchNorm folded in (measures.md, "Conventions").

For every affine map (Linear, Conv) in forward order: the spectral norm of the operator (for
convolutions the norm of the convolution operator at the layer's actual input shape, by power
iteration on the convolution and its transpose, never the reshaped kernel's), Frobenius and
entry-wise ℓ1 norms, and the (2,1) norm that enters the spectral complexity of Bartlett, Foster &
Telgarsky (2017). A BatchNorm that directly follows the affine map is folded into it with its
eval-mode affine map, x ↦ γ (x − μ)/sqrt(σ² + ε) + β, i.e. the weight's output channel c is
multiplied by γ_c / sqrt(σ²_c + ε) (biases are left out of every norm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genscope.graph import LayerFunction, LayerGraph, _get, arg_node, layer_graph


@dataclass(frozen=True)
class LayerNorms:
    """Norms of one affine layer (BatchNorm folded in when it directly follows).

    Attributes:
        name, kind: as in :class:`genscope.graph.AffineLayer`.
        spectral: the operator norm ‖A‖_σ. Linear layers: the largest singular value of the
            (folded) weight matrix, exactly. Convolutions: the norm of the convolution operator
            at the layer's actual input shape (zero padding, stride, dilation, groups included),
            by power iteration on the convolution and its transpose.
        frobenius: Frobenius norm of the (folded) weight tensor; for convolutions of the kernel,
            as Jiang et al. (2020, eqs. 29-42) do, not of the unrolled operator.
        l1: Σ |W| over the entries of the (folded) weight tensor (the ‖W‖_{1,1} of Wei & Ma's
            C_i; for convolutions of the kernel).
        fan_in, fan_out: flattened input and output sizes of the operator per example (for
            Linear layers the in and out features).
        num_params: number of weight entries (bias excluded).
        batchnorm_folded: whether a BatchNorm was folded in.
        l21: ‖A^T‖_{2,1} = Σ over output units of the ℓ2 norm of their incoming weights, of the
            operator (for convolutions, of the unrolled operator: every output position counts,
            with the taps that fall on padding left out). This is the quantity of Bartlett et al.
            (2017, eq. 1.2) for the map the network actually applies; measures-research.md §2.3
            notes that the Neyshabur et al. code instead uses the reshaped kernel, given here as
            ``l21_kernel``.
        l21_kernel: Σ over output channels of the ℓ2 norm of the reshaped kernel row
            (out, in·k·k); equal to ``l21`` for Linear layers.
        spectral_kernel: largest singular value of the reshaped (out, in·k·k) kernel: the cheap
            form some codes use; equal to ``spectral`` for Linear layers.
        power_iterations: iterations the power method used (0 for Linear layers: exact SVD).
    """

    name: str
    kind: str
    spectral: float
    frobenius: float
    l1: float
    fan_in: int
    fan_out: int
    num_params: int
    batchnorm_folded: bool
    l21: float = 0.0
    l21_kernel: float = 0.0
    spectral_kernel: float = 0.0
    power_iterations: int = 0

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def layer_norms(
    model: nn.Module, example: torch.Tensor, power_iters: int = 100, tol: float = 1e-6
) -> list[LayerNorms]:
    """Norms of the affine maps of ``model`` in forward order, BatchNorm folded in.

    Args:
        model: an ``nn.Module`` in eval mode or an exported ``GraphModule``.
        example: a batch holding at least one input of the actual shape.
        power_iters: maximum power iterations per convolution.
        tol: stop when the relative change of the estimate is at most ``tol``.

    Returns:
        One :class:`LayerNorms` per affine map, in forward order. Computed in float64.

    Raises:
        UnsupportedModel: TorchScript modules and graphs that cannot be captured.
    """
    graph = layer_graph(model, example)
    return [_norms(graph, layer, power_iters, tol) for layer in graph.layers]


def spectral_complexity(norms: list[LayerNorms], log: bool = False) -> float:
    """Spectral complexity R_A of Bartlett, Foster & Telgarsky (2017, eq. 1.2).

    R_A = (Π_i ρ_i ‖A_i‖_σ) · (Σ_i ‖A_i^T − M_i^T‖_{2,1}^{2/3} / ‖A_i‖_σ^{2/3})^{3/2} with reference
    matrices M_i = 0 and ρ_i = 1, biases left out, ‖A_i^T‖_{2,1} the ``l21`` of each layer (of
    the operator; see :class:`LayerNorms`).

    Args:
        norms: the output of :func:`layer_norms`.
        log: return ln R_A instead (no overflow for deep nets).

    >>> n = LayerNorms("a", "linear", 2.0, 2.0, 2.0, 1, 1, 1, False, l21=2.0)
    >>> round(spectral_complexity([n, n]), 12)  # 4 · (1 + 1)^{3/2}
    11.313708498985
    """
    if not norms:
        raise ValueError("spectral complexity of an empty list of layers")
    if any(n.spectral <= 0 for n in norms):
        return float("-inf") if log else 0.0
    log_prod = sum(math.log(n.spectral) for n in norms)
    total = sum((n.l21 / n.spectral) ** (2.0 / 3.0) for n in norms)
    value = log_prod + 1.5 * math.log(total)
    if log:
        return value
    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")


# --- one layer --------------------------------------------------------------------------------


def _weight(graph: LayerGraph, layer: LayerFunction) -> torch.Tensor:
    node = layer.affine
    if node.op == "call_module":
        return _get(graph.module, str(node.target)).weight.detach()
    return _get(graph.module, str(arg_node(node, 1, "weight").target)).detach()


def _bn_scale(graph: LayerGraph, layer: LayerFunction) -> torch.Tensor | None:
    """γ / sqrt(running_var + ε) of the BatchNorm that follows, or None."""
    node = layer.batchnorm
    if node is None:
        return None
    if node.op == "call_module":
        bn = _get(graph.module, str(node.target))
        if bn.running_var is None:
            return None  # batch statistics even in eval mode: not an affine map
        gamma = bn.weight if bn.affine else None
        var, eps = bn.running_var, bn.eps
    else:

        def arg(i: int) -> object:
            a = node.args[i] if len(node.args) > i else None
            return _get(graph.module, str(a.target)) if isinstance(a, torch.fx.Node) else a

        name = str(node.target)
        gamma, var = arg(1), arg(4)
        eps = node.args[6] if "no_training" in name else node.args[7]
        if not isinstance(var, torch.Tensor):
            return None
    scale = 1.0 / torch.sqrt(var.detach().double() + float(eps))  # type: ignore[arg-type]
    if isinstance(gamma, torch.Tensor):
        scale = scale * gamma.detach().double()
    return scale


def _operator(graph: LayerGraph, layer: LayerFunction) -> Callable[..., torch.Tensor]:
    """``apply(v, w)``: the layer's affine map without bias, with weight ``w``."""
    node = layer.affine
    if node.op == "call_module":
        m = _get(graph.module, str(node.target))
        if isinstance(m, nn.Linear):
            return lambda v, w: F.linear(v, w)
        return lambda v, w: m._conv_forward(v, w, None)
    target = node.target
    args = list(node.args)
    kwargs = dict(node.kwargs)

    def apply(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        a, k = list(args), dict(kwargs)
        for i, value in ((0, v), (1, w), (2, None)):
            if len(a) > i:
                a[i] = value
        for key, value in (("input", v), ("weight", w), ("bias", None)):
            if key in k:
                k[key] = value
        return target(*a, **k)  # type: ignore[operator]

    return apply


def _norms(graph: LayerGraph, layer: LayerFunction, power_iters: int, tol: float) -> LayerNorms:
    weight = _weight(graph, layer).double()
    scale = _bn_scale(graph, layer)
    if scale is not None:
        weight = weight * scale.to(weight.device).reshape((-1,) + (1,) * (weight.dim() - 1))
    rows = weight.reshape(weight.shape[0], -1)
    spectral_kernel = float(torch.linalg.matrix_norm(rows, ord=2))
    l21_kernel = float(rows.norm(dim=1).sum())
    fan_in = math.prod(layer.input_shape)
    if layer.kind == "linear":
        spectral, l21, iters = spectral_kernel, l21_kernel, 0
        fan_in, fan_out = int(weight.shape[1]), int(weight.shape[0])
    else:
        apply = _operator(graph, layer)
        x = torch.zeros((1, *layer.input_shape), dtype=torch.float64, device=weight.device)
        spectral, iters = _power_iteration(lambda v: apply(v, weight), x, power_iters, tol)
        row_sq = apply(torch.ones_like(x), weight * weight)
        fan_out = int(row_sq[0].numel())
        l21 = float(row_sq.clamp_min(0).sqrt().sum())
    return LayerNorms(
        name=layer.name,
        kind=layer.kind,
        spectral=spectral,
        frobenius=float(weight.norm()),
        l1=float(weight.abs().sum()),
        fan_in=int(fan_in),
        fan_out=fan_out,
        num_params=int(weight.numel()),
        batchnorm_folded=scale is not None,
        l21=l21,
        l21_kernel=l21_kernel,
        spectral_kernel=spectral_kernel,
        power_iterations=iters,
    )


def _power_iteration(
    op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int, tol: float
) -> tuple[float, int]:
    """σ_max of the linear map ``op`` at inputs shaped like ``x``.

    Power iteration on AᵀA in its Krylov-accelerated form (Lanczos with full
    reorthogonalization): the same products with the convolution and its transpose, but the
    top Ritz value converges far faster than the plain power method when the top singular
    values are close, as they are for convolutions. The transpose is a vector-Jacobian product
    (exact for a linear map). The Ritz value never exceeds the true σ_max²; iterations stop
    when the Ritz residual ‖AᵀA y − θ y‖ is at most ``tol`` · θ.

    Returns:
        (σ_max estimate, products with AᵀA used).
    """
    vjp = torch.func.vjp(op, x)[1]
    n = x.numel()
    steps = max(1, min(iters, n))
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(n, generator=gen, dtype=torch.float64).to(x.device)
    q = q / q.norm()
    basis: list[torch.Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    estimate = 0.0
    for step in range(1, steps + 1):
        basis.append(q)
        z = vjp(op(q.reshape(x.shape).to(x.dtype)))[0].reshape(-1).double()
        alpha = float(q @ z)
        alphas.append(alpha)
        stacked = torch.stack(basis)
        z = z - stacked.T @ (stacked @ z)
        z = z - stacked.T @ (stacked @ z)  # twice is enough
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        estimate = float(evals[-1])
        beta = float(z.norm())
        residual = beta * abs(float(evecs[-1, -1]))  # ‖AᵀA y − θ y‖ of the Ritz pair
        if residual <= tol * max(abs(estimate), 1e-300):
            return math.sqrt(max(estimate, 0.0)), step
        betas.append(beta)
        q = z / beta
    return math.sqrt(max(estimate, 0.0)), steps
