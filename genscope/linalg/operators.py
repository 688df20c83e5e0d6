"""Curvature operators over a params dict: the loss Hessian and the generalized Gauss-Newton.

Both act on flat vectors (or on ``(P, k)`` blocks of them) in the order of the parameter names
they were built with, and never touch the caller's model: they differentiate through
``functional(params, x)`` (``torch.func.functional_call``) with leaf tensors cloned from the
given parameters, so ``.grad``, the train/eval mode and the parameter values stay as they were.

The loss is the mean cross-entropy over the whole sample; the data is held as chunks of at most
``chunk_size`` examples and every product is accumulated chunk by chunk, weighted by the chunk's
share of the sample (the same convention as PyHessian's data-loader mode).

Hessian-vector products (Pearlmutter 1994) are available along several *paths*:

* ``"graph"``: the double-backward trick with one first-order graph per chunk, built once
  (``create_graph=True``) and reused for every product (``retain_graph=True``). The cheapest
  product when the retained graphs fit in memory (their size is measured with saved-tensor
  hooks before they are kept).
* ``"double_backward"``: the same product, but the first-order graph of each chunk is rebuilt
  for every call (memory bounded by one chunk); a ``(P, k)`` block shares one graph per chunk.
* ``"forward_over_reverse"``: ``torch.func.jvp`` of ``torch.func.grad`` (memory bounded by one
  chunk), one product at a time.
* ``"forward_over_reverse_vmap"``: the same, vectorised over the columns of a block with
  ``torch.func.vmap``.

``path="auto"`` keeps the graphs when they fit in ``memory_budget`` bytes and otherwise times
the memory-bounded paths on the first chunk and takes the fastest; the choice is recorded in
:attr:`CurvatureOperator.path_info`. Whatever the path, inference-mode BatchNorm is
differentiated as the affine map it is (:mod:`~genscope.linalg.eval_batchnorm`; the count of
rewritten calls is in ``path_info["affine_eval_batchnorm"]``).

The GGN (Schraudolph 2002, eq. 4; Martens 2020, §8) is G = Σ_i w_i J_iᵀ H_L,i J_i with J_i the
Jacobian of the logits of example i and H_L,i = diag(p_i) − p_i p_iᵀ the Hessian of the
cross-entropy in the logits (p_i the softmax); products use a Jacobian-vector product obtained by
differentiating a vector-Jacobian product (the "double-vjp" trick) and a vector-Jacobian product.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genscope.linalg.eval_batchnorm import AffineEvalBatchNorm
from genscope.linalg.heap import retained_heap

Functional = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]

HESSIAN_PATHS = ("graph", "double_backward", "forward_over_reverse", "forward_over_reverse_vmap")
GGN_PATHS = ("graph", "double_backward")

#: Retained first-order graphs up to this many bytes by default (``path="auto"``).
DEFAULT_MEMORY_BUDGET = 2 * 1024**3


class Operator:
    """A symmetric linear operator on flat vectors of length ``P``.

    Subclasses implement :meth:`_matmat` on a ``(P, k)`` block; :meth:`matvec` and ``@`` accept a
    ``(P,)`` vector or a ``(P, k)`` block and count every column in :attr:`num_matvecs`.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shape = (size, size)
        self.dtype = dtype
        self.device = device
        self.num_matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """The product with a ``(P,)`` vector or a ``(P, k)`` block.

        Raises:
            ValueError: the vector does not have ``P`` rows.
        """
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[0]:
            raise ValueError(
                f"operator of shape {self.shape} cannot multiply a tensor of shape "
                f"{tuple(v.shape)} (expected ({self.shape[0]},) or ({self.shape[0]}, k))"
            )
        block = v[:, None] if v.ndim == 1 else v
        block = block.to(device=self.device, dtype=self.dtype)
        self.num_matvecs += block.shape[1]
        out = self._matmat(block)
        return out[:, 0] if v.ndim == 1 else out

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)

    def _matmat(self, block: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:
        """The dense ``(P, P)`` matrix (``P`` products; for tests and tiny models)."""
        eye = torch.eye(self.shape[0], dtype=self.dtype, device=self.device)
        return self.matvec(eye)


class DenseOperator(Operator):
    """A dense symmetric matrix seen as an :class:`Operator` (for tests and references)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, block: torch.Tensor) -> torch.Tensor:
        return self.matrix @ block


def as_operator(op: Operator | torch.Tensor) -> Operator:
    """``op`` itself, or a dense tensor wrapped in a :class:`DenseOperator`."""
    if isinstance(op, Operator):
        return op
    if isinstance(op, torch.Tensor):
        return DenseOperator(op)
    raise TypeError(f"expected an Operator or a square tensor, got {type(op).__name__}")


def module_functional(model: nn.Module) -> Functional:
    """``functional(params, x)``: the model's output with ``params`` substituted (buffers kept).

    Works on plain modules and on ``torch.fx`` graph modules from ``torch.export``; never
    changes the module's mode.
    """
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def functional(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, (params, buffers), (x,))

    return functional


def make_chunks(
    x: torch.Tensor, y: torch.Tensor, chunk_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split a sample into consecutive chunks of at most ``chunk_size`` examples."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("the sample is empty")
    return [
        (x[i : i + chunk_size], y[i : i + chunk_size]) for i in range(0, x.shape[0], chunk_size)
    ]


class _SavedBytes:
    """Counts the bytes of the tensors autograd saves while active (saved-tensor hooks)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self) -> _SavedBytes:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


class CurvatureOperator(Operator):
    """Common machinery of the Hessian and GGN operators: parameters, chunks, flat vectors.

    Args:
        functional: ``functional(params, x) -> logits`` of shape ``(n, C)``.
        params: every parameter of the model by name (detached; never modified).
        x, y: the sample (inputs and integer labels).
        names: the parameters the operator acts on (a block of the curvature matrix); the
            others are held fixed. Default: all of ``params``, in their order.
        chunk_size: at most this many examples per forward pass.
        path: how products are computed (see the module docstring) or ``"auto"``.
        memory_budget: bytes the retained graphs may take for ``path="auto"``.
        affine_eval_batchnorm: run inference-mode BatchNorm as its per-channel affine map
            (:mod:`~genscope.linalg.eval_batchnorm`): the same Hessian, cheaper products.
    """

    paths: tuple[str, ...] = ()

    def __init__(
        self,
        functional: Functional,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        names: Sequence[str] | None = None,
        chunk_size: int = 1024,
        path: str = "auto",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        affine_eval_batchnorm: bool = True,
    ) -> None:
        names = list(params) if names is None else list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"unknown parameter names {unknown}; known: {list(params)}")
        if not names:
            raise ValueError("the operator needs at least one parameter")
        first = params[names[0]]
        super().__init__(sum(params[n].numel() for n in names), first.dtype, first.device)
        if path != "auto" and path not in self.paths:
            raise ValueError(f"unknown path {path!r}; expected 'auto' or one of {self.paths}")
        self.functional = functional
        self.names = names
        self.shapes = [params[n].shape for n in names]
        self.sizes = [params[n].numel() for n in names]
        self.fixed = {k: v.detach() for k, v in params.items() if k not in set(names)}
        self.base = {n: params[n].detach() for n in names}
        self.chunks = make_chunks(x, y, chunk_size)
        self.num_examples = int(x.shape[0])
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.affine_eval_batchnorm = affine_eval_batchnorm
        self._graphs: list[Any] | None = None
        self.path_info: dict[str, Any] = {"requested": path, "affine_eval_batchnorm": 0}
        self.path = self._choose_path(path)
        self.path_info["path"] = self.path

    # --- flat vectors -------------------------------------------------------------------------
    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(P,)`` vector into tensors shaped like the parameters."""
        return [
            c.reshape(s) for c, s in zip(torch.split(flat, self.sizes), self.shapes, strict=True)
        ]

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors into a ``(P,)`` vector."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def _flat_or_zero(
        self,
        grads: Sequence[torch.Tensor | None],
        leaves: Sequence[torch.Tensor],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The flat gradient, zeros for parameters the output does not depend on (into ``out``
        when given)."""
        parts = [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, leaves, strict=True)
        ]
        return torch.cat(parts) if out is None else torch.cat(parts, out=out)

    def _leaves(self) -> list[torch.Tensor]:
        return [self.base[n].clone().requires_grad_(True) for n in self.names]

    def _call(self, leaves: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        params = dict(self.fixed)
        params.update(zip(self.names, leaves, strict=True))
        if self.affine_eval_batchnorm:
            with AffineEvalBatchNorm() as mode:
                out = self.functional(params, x)
            self.path_info["affine_eval_batchnorm"] = mode.rewritten
        else:
            out = self.functional(params, x)
        if out.ndim != 2:
            raise ValueError(f"expected logits of shape (n, C), got {tuple(out.shape)}")
        return out

    def _weight(self, x: torch.Tensor) -> float:
        return x.shape[0] / self.num_examples

    # --- path choice --------------------------------------------------------------------------
    def _choose_path(self, path: str) -> str:
        if path == "graph":
            self._build_graphs()
            return path
        if path != "auto":
            return path
        x, y = self.chunks[0]
        with _SavedBytes() as saved:
            graph = self._build_graph(x, y)
        per_example = saved.bytes / max(1, x.shape[0])
        estimate = per_example * self.num_examples
        self.path_info["graph_bytes_estimate"] = int(estimate)
        if estimate <= self.memory_budget:
            self.path_info["reason"] = "retained graphs fit the memory budget"
            self._graphs = [graph] + [self._build_graph(cx, cy) for cx, cy in self.chunks[1:]]
            return "graph"
        del graph
        timings = self.time_paths([p for p in self.paths if p != "graph"], repeats=2)
        self.path_info["timings_s"] = timings
        self.path_info["reason"] = "fastest memory-bounded path on the first chunk"
        return min(timings, key=lambda k: timings[k])

    def time_paths(
        self, paths: Sequence[str], repeats: int = 2, chunk: int = 0
    ) -> dict[str, float]:
        """Seconds per product of each path on one chunk: the best of ``repeats`` rounds after a
        warm-up, the paths interleaved within each round so that a change of machine load
        affects them alike. For ``"graph"`` only the reuse is timed (not the graph's build).
        """
        x, y = self.chunks[chunk]
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(self.shape[0], 1, generator=gen, dtype=torch.float64)
        v = v.to(device=self.device, dtype=self.dtype)
        graphs = {p: self._build_graph(x, y) if p == "graph" else None for p in paths}
        best = dict.fromkeys(paths, float("inf"))
        with retained_heap(self.device):  # the allocator policy the products will run under
            for i in range(repeats + 1):
                for p in paths:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    t0 = time.perf_counter()
                    self._chunk_product(p, x, y, v, graphs[p])
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    if i > 0:
                        best[p] = min(best[p], time.perf_counter() - t0)
        return best

    def _build_graphs(self) -> None:
        if self._graphs is None:
            self._graphs = [self._build_graph(x, y) for x, y in self.chunks]

    # --- products -----------------------------------------------------------------------------
    def _matmat(self, block: torch.Tensor) -> torch.Tensor:
        if self.path == "graph":
            self._build_graphs()
        total: torch.Tensor | None = None
        with torch.enable_grad():
            for i, (x, y) in enumerate(self.chunks):
                graph = self._graphs[i] if self._graphs is not None else None
                part = self._chunk_product(self.path, x, y, block, graph)  # a fresh tensor
                weight = self._weight(x)
                if weight != 1.0:
                    part.mul_(weight)
                total = part if total is None else total.add_(part)
        assert total is not None  # there is at least one chunk
        return total

    def _build_graph(self, x: torch.Tensor, y: torch.Tensor) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _chunk_product(
        self, path: str, x: torch.Tensor, y: torch.Tensor, block: torch.Tensor, graph: Any
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def release(self) -> None:
        """Drop the retained graphs (they are rebuilt on the next product if needed)."""
        self._graphs = None

    def describe(self) -> dict[str, Any]:
        """The operator's size, sample, chunking and product path, for reports."""
        return {
            "num_params": self.shape[0],
            "num_examples": self.num_examples,
            "chunk_size": self.chunk_size,
            "num_chunks": len(self.chunks),
            "dtype": str(self.dtype).replace("torch.", ""),
            **self.path_info,
        }


class HessianOperator(CurvatureOperator):
    """The Hessian of the mean cross-entropy over a sample, w.r.t. (a subset of) the parameters.

    H = Σ_chunks (n_c / n) ∇²_θ mean_{i∈c} ℓ(f(x_i; θ), y_i); products by Pearlmutter's
    R-operator (Pearlmutter 1994) along the path of the module docstring.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
        >>> op = HessianOperator(module_functional(lin), dict(lin.named_parameters()), x, y)
        >>> op.shape
        (4, 4)
    """

    paths = HESSIAN_PATHS

    def _loss(self, leaves: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Any:
        return F.cross_entropy(self._call(leaves, x), y)

    def _build_graph(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        leaves = self._leaves()
        with torch.enable_grad():
            grads = torch.autograd.grad(self._loss(leaves, x, y), leaves, create_graph=True)
        return leaves, grads

    def _chunk_product(
        self, path: str, x: torch.Tensor, y: torch.Tensor, block: torch.Tensor, graph: Any
    ) -> torch.Tensor:
        k = block.shape[1]
        rows = block.T.contiguous()  # column j as a contiguous row: unflattened without a copy
        if path in ("graph", "double_backward"):
            if graph is None:
                graph = self._build_graph(x, y)
            leaves, grads = graph
            out = block.new_empty(k, block.shape[0])
            for j in range(k):
                hv = torch.autograd.grad(
                    grads, leaves, self.unflatten(rows[j]), retain_graph=True, allow_unused=True
                )
                self._flat_or_zero(hv, leaves, out=out[j])
            return out.T
        names = self.names

        def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self._loss([params[n] for n in names], x, y)

        primal = dict(self.base)

        def hvp(col: torch.Tensor) -> torch.Tensor:
            tangent = dict(zip(names, self.unflatten(col), strict=True))
            _, out = torch.func.jvp(torch.func.grad(loss), (primal,), (tangent,))
            return self.flatten([out[n] for n in names])

        if path == "forward_over_reverse_vmap" and k > 1:
            return torch.func.vmap(hvp, in_dims=0, out_dims=1)(rows)
        return torch.stack([hvp(rows[j]) for j in range(k)], dim=1)


class GGNOperator(CurvatureOperator):
    """The generalized Gauss-Newton matrix of the mean cross-entropy (Schraudolph 2002, eq. 4).

    G = Σ_i (1/n) J_iᵀ (diag(p_i) − p_i p_iᵀ) J_i with J_i = ∂f(x_i; θ)/∂θ and p_i the softmax
    of the logits (Martens 2020, §8.1). Positive semi-definite.

    Products: ``u ↦ Jᵀu`` is built once per chunk with ``create_graph=True``; ``Jv`` is its
    derivative in ``u`` (the double-vjp trick), then ``Jᵀ(H_L Jv)`` reuses the forward graph.
    """

    paths = GGN_PATHS

    def _build_graph(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        leaves = self._leaves()
        with torch.enable_grad():
            out = self._call(leaves, x)
            u = torch.zeros_like(out, requires_grad=True)
            jtu = torch.autograd.grad(out, leaves, u, create_graph=True, allow_unused=True)
        probs = torch.softmax(out.detach(), dim=1)
        return leaves, out, u, jtu, probs

    def _chunk_product(
        self, path: str, x: torch.Tensor, y: torch.Tensor, block: torch.Tensor, graph: Any
    ) -> torch.Tensor:
        if graph is None:
            graph = self._build_graph(x, y)
        leaves, out, u, jtu, probs = graph
        pairs = [(j, p) for j, p in zip(jtu, leaves, strict=True) if j is not None]
        idx = [i for i, j in enumerate(jtu) if j is not None]
        n = out.shape[0]
        k = block.shape[1]
        rows = block.T.contiguous()
        result = block.new_empty(k, block.shape[0])
        for c in range(k):
            v = self.unflatten(rows[c])
            (jv,) = torch.autograd.grad(
                [j for j, _ in pairs], u, [v[i] for i in idx], retain_graph=True
            )
            h = (probs * jv - probs * (probs * jv).sum(dim=1, keepdim=True)) / n
            g = torch.autograd.grad(out, leaves, h, retain_graph=True, allow_unused=True)
            self._flat_or_zero(g, leaves, out=result[c])
        return result.T


def layer_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Group parameter names by module prefix: ``0.weight`` and ``0.bias`` form layer ``0``.

    A name without a dot is its own group. Order follows the first appearance of each prefix.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        prefix, dot, _ = name.rpartition(".")
        groups.setdefault(prefix if dot else name, []).append(name)
    return groups
