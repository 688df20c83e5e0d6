"""One view of a network's structure, the same for every form it arrives in.

Zoo modules (``torch.fx.symbolic_trace``), ``torch.export`` programs (aten nodes, parameters
and buffers as ``get_attr`` nodes) and any other module :func:`genscope.graph.to_fx` can capture
map to one FX graph; :func:`network_view` reads from it, in forward order, every operation as a
:class:`Step`: affine maps (Linear/Conv with their weight and bias tensors), BatchNorm in eval
(running statistics, ε, affine weight and bias, from a module or from an aten
``batch_norm`` / ``native_batch_norm`` / ``_native_batch_norm_legit_no_training`` node), pooling
(max/avg, adaptive or not), activations (relu or other), shape operations and merges. Operations
outside these lists are ``unknown``: a measure that needs the structure refuses with
:attr:`NetworkView.unknown` as the reason. This is the only module that tests torch module
classes; measures ask the view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from genscope.graph import _affine_kind, _affine_name, _get, _target_name, to_fx

_BATCHNORM_OPS = {
    # name: (index of training flag or None, index of eps); args: input, weight, bias, mean, var
    "batch_norm": (5, 7),
    "native_batch_norm": (5, 7),
    "_native_batch_norm_legit_no_training": (None, 6),
}
_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.ELU: "elu",
    nn.Softplus: "softplus",
}
_ACTIVATION_OPS = {"relu", "relu_", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "elu"}
_ACTIVATION_OPS |= {"softplus", "hardtanh", "relu6"}
_POOLS: dict[type[nn.Module], str] = {
    nn.MaxPool1d: "max",
    nn.MaxPool2d: "max",
    nn.MaxPool3d: "max",
    nn.AdaptiveMaxPool1d: "adaptive_max",
    nn.AdaptiveMaxPool2d: "adaptive_max",
    nn.AvgPool1d: "avg",
    nn.AvgPool2d: "avg",
    nn.AvgPool3d: "avg",
    nn.AdaptiveAvgPool1d: "adaptive_avg",
    nn.AdaptiveAvgPool2d: "adaptive_avg",
}
_POOL_PREFIXES = (
    ("adaptive_max_pool", "adaptive_max"),
    ("adaptive_avg_pool", "adaptive_avg"),
    ("max_pool", "max"),
    ("avg_pool", "avg"),
)
_SHAPE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout)
_SHAPE_OPS = {"view", "reshape", "flatten", "permute", "contiguous", "clone", "dropout"}
_SHAPE_OPS |= {"alias", "getitem", "size", "sym_size", "dim", "numel", "unsqueeze", "squeeze"}
_SHAPE_OPS |= {"_assert_tensor_metadata", "getattr", "detach", "to", "t"}
_MERGE_OPS = {"add", "add_", "iadd", "cat"}


@dataclass(frozen=True)
class BatchNormParams:
    """BatchNorm in eval: y = a (x − μ) + β with a = γ / sqrt(σ² + ε) (γ = 1, β = 0 if absent)."""

    mean: torch.Tensor
    var: torch.Tensor
    eps: float
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    @property
    def scale(self) -> torch.Tensor:
        a = 1.0 / torch.sqrt(self.var + self.eps)
        return a if self.weight is None else a * self.weight

    @property
    def shift(self) -> torch.Tensor:
        s = -self.scale * self.mean
        return s if self.bias is None else s + self.bias


@dataclass(frozen=True)
class Step:
    """One operation of the graph: its node, role and kind, and the tensors it holds.

    role: ``input``, ``param``, ``affine``, ``batchnorm``, ``activation``, ``pool``,
    ``shape``, ``merge``, ``output`` or ``unknown``; kind: ``linear``/``conv2d`` …,
    ``relu``/``tanh`` …, ``max``/``avg``/``adaptive_avg`` …, the op name otherwise.
    """

    node: torch.fx.Node
    role: str
    kind: str
    name: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    batchnorm: BatchNormParams | None = None
    folds_into: str | None = None  # a BatchNorm directly after an affine map: that map's name


@dataclass
class NetworkView:
    """The steps of a network in forward order, with its FX graph."""

    module: torch.fx.GraphModule
    steps: list[Step]
    unknown: list[str] = field(default_factory=list)  # operations the view cannot interpret

    def by_role(self, role: str) -> list[Step]:
        return [s for s in self.steps if s.role == role]

    @property
    def affine(self) -> list[Step]:
        return self.by_role("affine")

    def step(self, node: torch.fx.Node) -> Step:
        return self._by_node[node]

    def __post_init__(self) -> None:
        self._by_node = {s.node: s for s in self.steps}

    def affine_call(self, step: Step, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The affine map of ``step`` applied to ``x`` with ``weight`` and no bias (its stride,
        padding, dilation and groups kept)."""
        node = step.node
        if node.op == "call_module":
            m = _get(self.module, str(node.target))
            if isinstance(m, nn.Linear):
                return torch.nn.functional.linear(x, weight)
            return m._conv_forward(x, weight, None)  # type: ignore[operator]
        args = list(node.args)
        args[0], args[1] = x, weight
        if len(args) > 2:
            args[2] = None
        kwargs = {k: v for k, v in node.kwargs.items() if k != "bias"}
        return node.target(*args, **kwargs)  # type: ignore[operator]


def network_view(model: nn.Module, example: torch.Tensor) -> NetworkView:
    """The view of ``model`` (a module or an exported program's ``GraphModule``).

    Raises:
        UnsupportedModel: TorchScript, or a model whose graph cannot be captured.
    """
    gm = to_fx(model, example)
    steps: list[Step] = []
    unknown: list[str] = []
    affine_out: dict[torch.fx.Node, str] = {}
    for node in gm.graph.nodes:
        step = classify(gm, node)
        if step.role == "batchnorm":
            src = node.args[0] if node.args else None
            if isinstance(src, torch.fx.Node) and src in affine_out and len(src.users) == 1:
                step = replace(step, folds_into=affine_out[src])
        if step.role == "affine":
            affine_out[node] = step.name
        if step.role == "unknown":
            unknown.append(step.name)
        steps.append(step)
    return NetworkView(gm, steps, unknown)


def classify(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Step:
    """The step of one graph node (its role, kind and tensors)."""
    if node.op == "placeholder":
        return Step(node, "input", "input", node.name)
    if node.op == "output":
        return Step(node, "output", "output", node.name)
    if node.op == "get_attr":
        return Step(node, "param", "param", str(node.target))
    if node.op == "call_module" and str(node.target).startswith("_guards"):
        return Step(node, "shape", "guard", node.name)
    kind = _affine_kind(gm, node)
    if kind is not None:
        return _affine_step(gm, node, kind)
    if node.op == "call_module":
        return _module_step(gm, node)
    name = _target_name(node)
    if name in _BATCHNORM_OPS:
        return _bn_op_step(gm, node, name)
    if name in _ACTIVATION_OPS:
        return Step(node, "activation", name.rstrip("_"), node.name)
    pool = _pool_op_kind(name)
    if pool is not None:
        return Step(node, "pool", pool, node.name)
    if name in _SHAPE_OPS:
        return Step(node, "shape", name, node.name)
    if name in _MERGE_OPS:
        return Step(node, "merge", name.strip("i_") if name != "iadd" else "add", node.name)
    return Step(node, "unknown", name, f"{node.name} ({name})")


def _pool_op_kind(name: str) -> str | None:
    base = name.lstrip("_")
    for prefix, kind in _POOL_PREFIXES:
        if base.startswith(prefix):
            return kind
    return None


def _affine_step(gm: torch.fx.GraphModule, node: torch.fx.Node, kind: str) -> Step:
    if node.op == "call_module":
        m = _get(gm, str(node.target))
        return Step(node, "affine", kind, str(node.target), m.weight, m.bias)
    weight = _get(gm, str(node.args[1].target))  # type: ignore[union-attr]
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    bias = _get(gm, str(b.target)) if isinstance(b, torch.fx.Node) else None
    return Step(node, "affine", kind, _affine_name(gm, node), weight, bias)


def _module_step(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Step:
    m = _get(gm, str(node.target))
    name = str(node.target)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.training or m.running_var is None or m.running_mean is None:
            return Step(node, "unknown", "batchnorm", f"{name} (BatchNorm without running stats)")
        bn = BatchNormParams(m.running_mean, m.running_var, float(m.eps), m.weight, m.bias)
        return Step(node, "batchnorm", "batchnorm", name, batchnorm=bn)
    for table, role in ((_ACTIVATIONS, "activation"), (_POOLS, "pool")):
        kind = table.get(type(m))
        if kind is not None:
            return Step(node, role, kind, name)
    if isinstance(m, _SHAPE_MODULES):
        return Step(node, "shape", type(m).__name__.lower(), name)
    return Step(node, "unknown", type(m).__name__, f"{name} ({type(m).__name__})")


def _bn_op_step(gm: torch.fx.GraphModule, node: torch.fx.Node, name: str) -> Step:
    train_at, eps_at = _BATCHNORM_OPS[name]

    def arg(i: int) -> Any:
        a = node.args[i] if len(node.args) > i else None
        return _get(gm, str(a.target)) if isinstance(a, torch.fx.Node) else a

    mean, var = arg(3), arg(4)
    training = arg(train_at) if train_at is not None else False
    if training or not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        return Step(node, "unknown", name, f"{node.name} ({name} without running stats)")
    w, b = arg(1), arg(2)
    bn = BatchNormParams(
        mean,
        var,
        float(arg(eps_at)),
        w if isinstance(w, torch.Tensor) else None,
        b if isinstance(b, torch.Tensor) else None,
    )
    return Step(node, "batchnorm", "batchnorm", node.name, batchnorm=bn)


Transform = Callable[[Step, tuple[Any, ...]], Any]


class ViewInterpreter(torch.fx.Interpreter):
    """Run the view's graph, letting ``on_step(step, args)`` replace a node's computation
    (return ``NotImplemented`` to run the node as it is) and recording chosen node values."""

    def __init__(
        self,
        view: NetworkView,
        on_step: Transform | None = None,
        record: set[torch.fx.Node] | None = None,
    ) -> None:
        super().__init__(view.module)
        self.view = view
        self.on_step = on_step
        self.record = set(record or ())
        self.values: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out: Any = NotImplemented
        if self.on_step is not None and n.op not in ("placeholder", "output", "get_attr"):
            args, _ = self.fetch_args_kwargs_from_env(n)
            out = self.on_step(self.view.step(n), args)
        if out is NotImplemented:
            out = super().run_node(n)
        if n in self.record:
            self.values[n] = out
        return out
