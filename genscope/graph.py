"""Model introspection: the affine maps of a network in forward order, and homogeneity.

Works for ``nn.Module`` models (the zoo, anything with Linear/Conv submodules), for
``torch.export`` programs (FX graphs of aten ops), and, by module names only, for TorchScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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
