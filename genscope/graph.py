"""Model introspection: the affine maps of a network in forward order, homogeneity, and the
layer functions of the all-layer margin with a perturbed forward pass.

Works for ``nn.Module`` models (the zoo, anything with Linear/Conv submodules), for
``torch.export`` programs (FX graphs of aten ops), and, by module names only, for TorchScript.
:func:`layer_graph` captures a model as an FX graph (:func:`to_fx`), finds its layer functions
(measures.md, "All-layer margin convention") and builds ``F(x, δ)``, which adds a perturbation at
every layer-function output; TorchScript modules cannot be captured and raise
:class:`~genscope.errors.UnsupportedModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genscope.errors import UnsupportedModel

AFFINE_MODULES: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
}
_SCRIPT_KINDS = {"Linear": "linear", "Conv1d": "conv1d", "Conv2d": "conv2d", "Conv3d": "conv3d"}
_AFFINE_OPS = ("aten.linear", "aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution")


@dataclass(frozen=True)
class AffineLayer:
    """One affine map: its name (module path or graph node), kind and weight shape."""

    name: str
    kind: str
    shape: tuple[int, ...]
    has_bias: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}


def is_graph_module(model: nn.Module) -> bool:
    return isinstance(model, torch.fx.GraphModule)


def is_scripted(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def affine_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[AffineLayer]:
    """The affine maps (Linear, Conv) in forward order.

    For plain modules, forward order is taken from a forward pass on ``example`` when given
    (hooks record the call order), else registration order. Exported programs give graph order.
    """
    if is_graph_module(model):
        return _graph_affine_layers(model)  # type: ignore[arg-type]
    if is_scripted(model):
        return [
            AffineLayer(name, _SCRIPT_KINDS[m.original_name], tuple(m.weight.shape), _has_bias(m))
            for name, m in model.named_modules()
            if getattr(m, "original_name", None) in _SCRIPT_KINDS
        ]
    found = [(name, m) for name, m in model.named_modules() if type(m) in AFFINE_MODULES]
    if example is not None:
        order: list[str] = []
        handles = [
            m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
            for name, m in found
        ]
        try:
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
        by_name = dict(found)
        seen: set[str] = set()
        found = [(n, by_name[n]) for n in order if not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]
    return [
        AffineLayer(name, AFFINE_MODULES[type(m)], tuple(m.weight.shape), m.bias is not None)
        for name, m in found
    ]


def _has_bias(m: nn.Module) -> bool:
    return getattr(m, "bias", None) is not None


def _graph_affine_layers(gm: torch.fx.GraphModule) -> list[AffineLayer]:
    params = dict(gm.named_parameters())
    layers = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(_AFFINE_OPS):
            continue
        weight = node.args[1]
        target = getattr(weight, "target", None)
        if not isinstance(target, str) or target not in params:
            continue
        shape = tuple(params[target].shape)
        kind = "linear" if len(shape) == 2 else f"conv{len(shape) - 2}d"
        bias = node.args[2] if len(node.args) > 2 else None
        name = target[: -len(".weight")] if target.endswith(".weight") else target
        layers.append(AffineLayer(name, kind, shape, bias is not None))
    return layers


_HOMOGENEOUS_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Sequential,
)
_HOMOGENEOUS_OPS = (
    "aten.relu",
    "aten.leaky_relu",
    "aten.max_pool",
    "aten.avg_pool",
    "aten.adaptive_avg_pool",
    "aten._adaptive_avg_pool",
    "aten.view",
    "aten.reshape",
    "aten.flatten",
    "aten.permute",
    "aten.contiguous",
    "aten.clone",
    "aten.dropout",
    "aten.alias",
    "aten.max_pool2d_with_indices",
    "getitem",
)


@dataclass(frozen=True)
class Homogeneity:
    """Whether f(c·θ) = c^L f(θ) for c > 0, the degree L, and why not when it is not."""

    homogeneous: bool
    degree: int | None
    reason: str


def homogeneity(model: nn.Module) -> Homogeneity:
    """Detect positively homogeneous chains: bias-free affine maps with ReLU-like activations.

    A bias-free ReLU network with L affine layers composed in a chain satisfies
    f(x; cθ) = c^L f(x; θ) (Lyu & Li 2020, Assumption (A1)); biases, BatchNorm, smooth
    activations and residual merges break it. The check is conservative: "not homogeneous"
    may be said of an exotic homogeneous net, never the other way round.
    """
    if is_scripted(model):
        return Homogeneity(False, None, "TorchScript module: structure not inspected")
    layers = affine_layers(model)
    if not layers:
        return Homogeneity(False, None, "no affine layers found")
    biased = [layer.name for layer in layers if layer.has_bias]
    if biased:
        return Homogeneity(False, None, f"affine layers with bias: {', '.join(biased[:5])}")
    if is_graph_module(model):
        for node in model.graph.nodes:  # type: ignore[union-attr]
            if node.op != "call_function":
                continue
            target = str(node.target)
            if target.startswith(_AFFINE_OPS) or target.startswith(_HOMOGENEOUS_OPS):
                if len([a for a in node.args if isinstance(a, torch.fx.Node)]) > 1 and not (
                    target.startswith(_AFFINE_OPS)
                ):
                    return Homogeneity(False, None, f"operation {target} merges tensors")
                continue
            if target.startswith("_operator.getitem") or target == "<built-in function getitem>":
                continue
            return Homogeneity(False, None, f"operation {target} is not positively homogeneous")
        return Homogeneity(True, len(layers), "bias-free chain of affine maps and ReLU-like ops")
    for name, m in model.named_modules():
        if name == "" and not isinstance(m, _HOMOGENEOUS_MODULES) and type(m) not in AFFINE_MODULES:
            continue  # the root container itself; its leaves are checked
        if type(m) in AFFINE_MODULES or isinstance(m, _HOMOGENEOUS_MODULES):
            continue
        if list(m.children()):
            if not isinstance(m, nn.Sequential):
                return Homogeneity(
                    False, None, f"container {name or 'root'} ({type(m).__name__}) may merge paths"
                )
            continue
        return Homogeneity(
            False, None, f"{name} ({type(m).__name__}) is not positively homogeneous"
        )
    if type(model) not in AFFINE_MODULES and not isinstance(model, nn.Sequential):
        forward_is_chain = _children_form_chain(model)
        if not forward_is_chain:
            return Homogeneity(False, None, f"{type(model).__name__}.forward is not a plain chain")
    return Homogeneity(True, len(layers), "bias-free chain of affine maps and ReLU-like ops")


def _children_form_chain(model: nn.Module) -> bool:
    """A custom root whose children are all Sequential/homogeneous leaves and whose forward
    applies them in order: checked by tracing with torch.fx when possible."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:
        return False
    for node in traced.graph.nodes:
        if (
            node.op == "call_function"
            and str(node.target)
            not in {
                "<built-in function getitem>",
            }
            and "flatten" not in str(node.target)
            and "relu" not in str(node.target)
        ):
            return False
        if node.op == "call_method" and node.target not in {"view", "flatten", "reshape", "relu"}:
            return False
    return True


# --- layer functions and the perturbed forward pass (all-layer margin) -----------------------

_AFFINE_FUNCTIONS = {
    "linear": "linear",
    "conv1d": "conv1d",
    "conv2d": "conv2d",
    "conv3d": "conv3d",
    "convolution": "conv",
}
_SIZE_QUERIES = ("size", "sym_size", "dim", "numel", "sym_numel", "sym_stride", "stride")


@dataclass(frozen=True)
class LayerFunction:
    """A layer function in the sense of the all-layer margin convention (measures.md).

    It starts at an affine map (``affine``, a graph node) and takes in the single-input
    operations after it up to ``output`` (the node whose value gets the perturbation
    δ_i · ‖u_i‖, u_i the input of the affine map). ``batchnorm`` is the BatchNorm node that
    directly follows the affine map, if any (folded into it for norm-based quantities).
    """

    index: int
    name: str
    kind: str
    affine: torch.fx.Node
    output: torch.fx.Node
    batchnorm: torch.fx.Node | None
    input_shape: tuple[int, ...]  # per example, of the affine map's input
    output_shape: tuple[int, ...]  # per example, of the layer function's output (the δ shape)
    ops: tuple[str, ...]  # the operations after the affine map, for the report


@dataclass
class LayerGraph:
    """An FX graph of a model with its layer functions, and a perturbed forward pass.

    ``forward(x, deltas, scaled=True, record=None)`` returns the logits with
    ``h_i ← h_i + deltas[i] · ‖u_i‖`` at each layer-function output (``scaled=False``:
    ``h_i ← h_i + deltas[i]``, for gradients with respect to the hidden values); ``deltas`` is a
    sequence with one entry per layer function, of shape ``(batch, *output_shape)`` or ``None``.
    ``record``, a dict, receives the (perturbed) output of every layer function by index.
    """

    module: torch.fx.GraphModule  # the original graph (for parameter lookup)
    perturbed: torch.fx.GraphModule
    layers: list[LayerFunction]
    static_batch: int | None

    @property
    def points(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def forward(
        self,
        x: torch.Tensor,
        deltas: Sequence[torch.Tensor | None] | None = None,
        scaled: bool = True,
        record: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.static_batch is None or x.shape[0] == self.static_batch:
            return _first(self.perturbed(x, deltas, scaled, record))
        return self._forward_static(x, deltas, scaled, record)

    __call__ = forward

    def _forward_static(
        self,
        x: torch.Tensor,
        deltas: Sequence[torch.Tensor | None] | None,
        scaled: bool,
        record: dict[int, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Programs exported with a fixed batch size: split into chunks, zero-pad the last
        (exact in eval mode, where examples do not interact)."""
        b = int(self.static_batch)  # type: ignore[arg-type]
        outs, recs = [], []
        for start in range(0, x.shape[0], b):
            size = min(b, x.shape[0] - start)
            chunk = _pad(x[start : start + size], b)
            d = None
            if deltas is not None:
                d = [None if t is None else _pad(t[start : start + size], b) for t in deltas]
            rec: dict[int, torch.Tensor] | None = {} if record is not None else None
            outs.append(_first(self.perturbed(chunk, d, scaled, rec))[:size])
            if rec is not None:
                recs.append({k: v[:size] for k, v in rec.items()})
        if record is not None:
            for k in recs[0]:
                record[k] = torch.cat([r[k] for r in recs])
        return torch.cat(outs)


def _pad(t: torch.Tensor, b: int) -> torch.Tensor:
    if t.shape[0] == b:
        return t
    return torch.cat([t, t.new_zeros((b - t.shape[0], *t.shape[1:]))])


def _first(out: Any) -> torch.Tensor:
    while isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModel("the model's output is not a single tensor of logits")
    return out


def _inject(
    h: torch.Tensor,
    u: torch.Tensor,
    deltas: Any,
    scaled: bool,
    record: dict[int, torch.Tensor] | None,
    index: int,
) -> torch.Tensor:
    """h + δ_i · ‖u‖ per example (or h + δ_i when ``scaled`` is false)."""
    delta = None if deltas is None else deltas[index]
    if delta is not None:
        if scaled:
            norm = u.reshape(u.shape[0], -1).norm(dim=1)
            h = h + delta * norm.reshape((-1,) + (1,) * (h.dim() - 1))
        else:
            h = h + delta
    if record is not None:
        record[index] = h.clone()  # later in-place ops (x += …) must not change it
    return h


def to_fx(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The model as an FX graph: exported programs as they are, plain modules by
    ``torch.fx.symbolic_trace`` or, when that fails, ``torch.export`` with a dynamic batch.

    Raises:
        UnsupportedModel: TorchScript modules, or models that neither method can capture.
    """
    if is_scripted(model):
        raise UnsupportedModel(
            "TorchScript modules cannot be traced into a graph; this measure needs the graph "
            "(export the model with torch.export.save, or upload its state dict with an "
            "architecture)"
        )
    if is_graph_module(model):
        return model  # type: ignore[return-value]
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as trace_error:
        batch = torch.export.Dim("batch", min=1)
        ex = example[:1].expand(2, *example.shape[1:]).contiguous()
        try:
            program = torch.export.export(model, (ex,), dynamic_shapes=({0: batch},))
        except Exception as export_error:
            raise UnsupportedModel(
                f"could not capture the model's graph (symbolic trace: "
                f"{type(trace_error).__name__}; export: {type(export_error).__name__}: "
                f"{str(export_error).splitlines()[0][:200] if str(export_error) else ''})"
            ) from None
        return program.module()  # type: ignore[return-value]


def _static_batch(gm: torch.fx.GraphModule) -> int | None:
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) > 0 and type(shape[0]) is int:
                return int(shape[0])
            return None
    return None


def _is_guard(node: torch.fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith("_guards")


def _target_name(node: torch.fx.Node) -> str:
    """A short name of the operation: ``linear``, ``conv2d``, ``relu``, ``batch_norm`` …"""
    if node.op == "call_module":
        return type(_get(node.graph.owning_module, str(node.target))).__name__
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    if "." in name:  # aten.relu.default
        parts = str(target).split(".")
        name = parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[-1]
    return name


def _get(root: nn.Module | None, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _affine_kind(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """The kind of an affine node (``linear``, ``conv2d`` …) or None; the weight must be a
    parameter of the model (a module's, or a ``get_attr`` node)."""
    if node.op == "call_module":
        m = _get(gm, str(node.target))
        return AFFINE_MODULES.get(type(m))
    if node.op != "call_function":
        return None
    name = _target_name(node)
    if name not in _AFFINE_FUNCTIONS:
        return None
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr":
        return None
    if name == "convolution" and len(node.args) > 6 and node.args[6]:
        return None  # transposed convolution: not an affine map of the list
    w = _get(gm, str(weight.target))
    if not isinstance(w, torch.Tensor):
        return None
    return "linear" if w.dim() == 2 else f"conv{w.dim() - 2}d"


def arg_node(node: torch.fx.Node, index: int, key: str) -> torch.fx.Node:
    """Argument ``index`` (or keyword ``key``) of a graph node, which must be a node."""
    a = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    if not isinstance(a, torch.fx.Node):
        raise UnsupportedModel(f"graph node {node.name}: argument {key} is not a tensor")
    return a


def _affine_name(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    target = str(arg_node(node, 1, "weight").target)
    return target[: -len(".weight")] if target.endswith(".weight") else target


def _data_inputs(node: torch.fx.Node, values: dict[torch.fx.Node, Any]) -> list[torch.fx.Node]:
    """The tensor-valued inputs of a node that are data (not parameters, buffers or sizes),
    with repetition."""
    found: list[torch.fx.Node] = []

    def visit(a: Any) -> Any:
        if (
            isinstance(a, torch.fx.Node)
            and a.op != "get_attr"
            and isinstance(values.get(a), torch.Tensor)
        ):
            found.append(a)
        return a

    torch.fx.node.map_aggregate(node.args, visit)
    torch.fx.node.map_aggregate(node.kwargs, visit)
    return found


def _real_users(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [
        u
        for u in node.users
        if not _is_guard(u)
        and not (u.op in ("call_method", "call_function") and _target_name(u) in _SIZE_QUERIES)
        and not (u.op == "call_function" and _target_name(u) == "getattr")
    ]


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def layer_graph(model: nn.Module, example: torch.Tensor) -> LayerGraph:
    """Capture the model's graph, find its layer functions (measures.md, "All-layer margin
    convention") and build the perturbed forward pass.

    A layer function starts at an affine map (Linear, Conv) and takes in the single-input
    operations that follow it (bias, BatchNorm, activation, pooling, reshape, dropout) until the
    next affine map, a merge (residual add, concatenation), a tensor used twice, or the output.

    Args:
        model: an ``nn.Module`` in eval mode or an exported ``GraphModule``.
        example: a batch of inputs of the actual shape (one example is enough).

    Raises:
        UnsupportedModel: TorchScript, a graph that cannot be captured, no affine layer.
    """
    from genscope.network import classify  # the view reads BatchNorm in either form

    gm = to_fx(model, example)
    static = _static_batch(gm)
    ex = example[:1]
    if static is not None:
        ex = ex.expand(static, *ex.shape[1:]).contiguous()
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(ex)
    values = recorder.values
    layers: list[LayerFunction] = []
    for node in gm.graph.nodes:
        kind = _affine_kind(gm, node)
        if kind is None:
            continue
        u = arg_node(node, 0, "input")
        cur, bn = node, None
        ops: list[str] = []
        while True:
            users = _real_users(cur)
            if len(users) != 1:
                break
            nxt = users[0]
            if nxt.op == "output" or _affine_kind(gm, nxt) is not None:
                break
            if _data_inputs(nxt, values) != [cur]:
                break  # a merge, or the tensor used twice
            name = _target_name(nxt)
            if not ops and classify(gm, nxt).role == "batchnorm":
                bn = nxt  # the network view's BatchNorm, a module or an aten node
            if not isinstance(values.get(nxt), torch.Tensor):
                items = _real_users(nxt)
                if (
                    len(items) != 1
                    or _target_name(items[0]) != "getitem"
                    or items[0].args[1] != 0
                    or not isinstance(values.get(items[0]), torch.Tensor)
                ):
                    break
                ops.append(name)
                cur = items[0]
                continue
            ops.append(name)
            cur = nxt
        in_val, out_val = values[u], values[cur]
        layers.append(
            LayerFunction(
                index=len(layers),
                name=_affine_name(gm, node),
                kind=kind,
                affine=node,
                output=cur,
                batchnorm=bn,
                input_shape=tuple(in_val.shape[1:]),
                output_shape=tuple(out_val.shape[1:]),
                ops=tuple(ops),
            )
        )
    if not layers:
        raise UnsupportedModel("no affine layer (Linear, Conv) found in the model's graph")
    return LayerGraph(gm, _perturbed_module(gm, layers), layers, static)


def _perturbed_module(
    gm: torch.fx.GraphModule, layers: list[LayerFunction]
) -> torch.fx.GraphModule:
    """A copy of the graph taking ``(x, deltas, scaled, record)`` with ``_inject`` after each
    layer-function output."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    by_output = {layer.output: layer for layer in layers}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModel(f"the model takes {len(placeholders)} inputs; one is supported")
    x = graph.placeholder("x")
    deltas = graph.placeholder("deltas")
    scaled = graph.placeholder("scaled")
    record = graph.placeholder("record")
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = x
            continue
        if _is_guard(node):
            continue
        if node.op == "output":
            graph.output(torch.fx.node.map_arg(node.args[0], lambda n: env[n]))
            continue
        new = graph.node_copy(node, lambda n: env[n])
        layer = by_output.get(node)
        if layer is not None:
            u = arg_node(layer.affine, 0, "input")
            new = graph.call_function(_inject, (new, env[u], deltas, scaled, record, layer.index))
        env[node] = new
    graph.lint()
    return torch.fx.GraphModule(gm, graph)
