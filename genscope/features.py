"""Intermediate values of a network: penultimate features and ReLU outputs.

Representation measures (neural collapse, activation sparsity) need what the network computes
inside, not only its logits. :class:`FeatureExtractor` runs a model on a batch and returns the
logits with

* the **penultimate features**: the input of the last affine map (the classifier), flattened
  per example, and that map's weight and bias;
* the **ReLU outputs**: the output of every ReLU application, in forward order (a module applied
  twice in one forward pass gives two entries, ``name`` and ``name#2``).

For plain ``nn.Module`` models the penultimate features come from a forward pre-hook on the
last ``nn.Linear``/``nn.Conv*`` in forward order; the ReLUs from the graph traced by
:func:`genscope.graph.to_fx` (which shows ``F.relu`` calls as well as ``nn.ReLU`` modules), or,
when the model cannot be traced, from forward hooks on its ``nn.ReLU`` modules. Graph modules
(``torch.export`` programs) are run node by node with a :class:`torch.fx.Interpreter`; their
mode is fixed at export and is never changed here (``.eval()`` is not allowed on them).
TorchScript modules cannot be observed: they raise :class:`~genscope.errors.UnsupportedModel`.
Nothing here changes the model's parameters, ``.grad`` or mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genscope.errors import UnsupportedModel
from genscope.graph import AFFINE_MODULES, affine_layers, is_graph_module, is_scripted, to_fx

PENULTIMATE = "penultimate"
RELU = "relu"
_RELU_NAMES = {"relu", "relu_", "ReLU"}
_AFFINE_FUNCTIONS = {"linear", "conv1d", "conv2d", "conv3d", "convolution"}


@dataclass(frozen=True)
class Classifier:
    """The last affine map of a network: its name, weight (out, in) and bias (out) or None."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    kind: str  # "linear" or "convNd"


@dataclass
class Captured:
    """One batch: the logits, the penultimate features (n, p) and the ReLU outputs by name."""

    logits: torch.Tensor
    features: torch.Tensor | None = None
    relus: dict[str, torch.Tensor] = field(default_factory=dict)


def _node_name(node: torch.fx.Node, root: nn.Module) -> str:
    """A short operation name: ``relu``, ``linear``, ``conv2d`` … (also for call_module)."""
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    text = str(target)
    if text.startswith("aten."):  # aten.relu.default
        return text.split(".")[1]
    return getattr(target, "__name__", text)


def _get_attr(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise UnsupportedModel(f"expected a weight tensor, found a {type(value).__name__}")
    return value.detach()


def _first_tensor(out: Any) -> torch.Tensor:
    while isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModel("the model's output is not a single tensor of logits")
    return out


class _Recorder(torch.fx.Interpreter):
    """Runs a graph and keeps the values of the watched nodes (for affine nodes: their input)."""

    def __init__(
        self, gm: torch.fx.GraphModule, relus: dict[torch.fx.Node, str], last: torch.fx.Node | None
    ) -> None:
        super().__init__(gm)
        self.relu_nodes = relus
        self.last = last
        self.found: Captured = Captured(logits=torch.empty(0))

    def run_node(self, n: torch.fx.Node) -> Any:
        if n is self.last:
            u = self.env[n.args[0]] if n.args else self.env[n.kwargs["input"]]  # type: ignore[index]
            self.found.features = u.reshape(u.shape[0], -1)
        out = super().run_node(n)
        name = self.relu_nodes.get(n)
        if name is not None:
            self.found.relus[name] = out
        return out


class FeatureExtractor:
    """Observe a model's penultimate features and/or ReLU outputs on batches of inputs.

    Args:
        model: an ``nn.Module`` (left in its mode), or a ``torch.fx.GraphModule``.
        example: one batch of inputs of the actual shape (used to find the forward order).
        penultimate: capture the input of the last affine map.
        relus: capture the output of every ReLU.

    Raises:
        UnsupportedModel: TorchScript modules; no affine map when ``penultimate``; no ReLU when
            ``relus``; a graph that cannot be captured.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        penultimate: bool = False,
        relus: bool = False,
    ) -> None:
        if is_scripted(model):
            raise UnsupportedModel(
                "TorchScript modules cannot be observed inside (no hooks, no graph); export the "
                "model with torch.export.save, or upload its state dict with an architecture"
            )
        self.model = model
        self.want_penultimate = penultimate
        self.want_relus = relus
        self.classifier: Classifier | None = None
        self._graph: torch.fx.GraphModule | None = None
        self._static_batch: int | None = None
        self._relu_modules: list[tuple[str, nn.Module]] = []
        self._last_module: nn.Module | None = None
        if is_graph_module(model):
            self._setup_graph(model, example)  # type: ignore[arg-type]
        else:
            self._setup_hooks(model, example)

    # --- discovery ------------------------------------------------------------------------------
    def _setup_hooks(self, model: nn.Module, example: torch.Tensor) -> None:
        if self.want_relus:
            # the traced graph shows functional ReLUs (F.relu, torch.relu) as well as modules
            try:
                graph = to_fx(model, example)
            except UnsupportedModel:
                graph = None
            if graph is not None:
                self._setup_graph(graph, example)
                return
            self._relu_modules = [(n, m) for n, m in model.named_modules() if type(m) is nn.ReLU]
            if not self._relu_modules:
                raise UnsupportedModel(
                    "the model has no nn.ReLU module and its graph could not be captured"
                )
        if self.want_penultimate:
            layers = affine_layers(model, example[:1])
            if not layers:
                raise UnsupportedModel("no affine layer (Linear, Conv) found in the model")
            last = layers[-1]
            module = model.get_submodule(last.name)
            self._last_module = module
            bias = getattr(module, "bias", None)
            self.classifier = Classifier(
                last.name,
                _tensor(module.weight),
                None if bias is None else bias.detach(),
                AFFINE_MODULES[type(module)],
            )

    def _setup_graph(self, gm: torch.fx.GraphModule, example: torch.Tensor) -> None:
        self._graph = gm
        relus: dict[torch.fx.Node, str] = {}
        last: torch.fx.Node | None = None
        counts: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op not in ("call_module", "call_function", "call_method"):
                if node.op == "placeholder" and self._static_batch is None:
                    shape = getattr(node.meta.get("val"), "shape", None)
                    if shape is not None and len(shape) > 0 and type(shape[0]) is int:
                        self._static_batch = int(shape[0])
                continue
            name = _node_name(node, gm)
            if name in _RELU_NAMES:
                base = str(node.target) if node.op == "call_module" else node.name
                counts[base] = counts.get(base, 0) + 1
                relus[node] = base if counts[base] == 1 else f"{base}#{counts[base]}"
            elif self._affine_node(gm, node, name) is not None:
                last = node
        if self.want_relus and not relus:
            raise UnsupportedModel("the model has no ReLU activation")
        if self.want_penultimate:
            if last is None:
                raise UnsupportedModel("no affine layer (Linear, Conv) found in the model's graph")
            self.classifier = self._affine_node(gm, last, _node_name(last, gm))
        self._relu_nodes = relus
        self._last_node = last if self.want_penultimate else None

    @staticmethod
    def _affine_node(gm: torch.fx.GraphModule, node: torch.fx.Node, name: str) -> Classifier | None:
        if node.op == "call_module":
            m = gm.get_submodule(str(node.target))
            if type(m) not in AFFINE_MODULES:
                return None
            bias = getattr(m, "bias", None)
            return Classifier(
                str(node.target),
                _tensor(m.weight),
                None if bias is None else bias.detach(),
                AFFINE_MODULES[type(m)],
            )
        if node.op != "call_function" or name not in _AFFINE_FUNCTIONS:
            return None
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr":
            return None
        if name == "convolution" and len(node.args) > 6 and node.args[6]:
            return None  # transposed convolution
        w = _get_attr(gm, str(weight.target))
        if not isinstance(w, torch.Tensor):
            return None
        b_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        b = (
            _get_attr(gm, str(b_node.target))
            if isinstance(b_node, torch.fx.Node) and b_node.op == "get_attr"
            else None
        )
        target = str(weight.target)
        label = target[: -len(".weight")] if target.endswith(".weight") else target
        kind = "linear" if w.dim() == 2 else f"conv{w.dim() - 2}d"
        return Classifier(label, w.detach(), None if b is None else b.detach(), kind)

    # --- running ----------------------------------------------------------------------------------
    @contextmanager
    def _hooks(self, found: Captured) -> Iterator[None]:
        handles = []
        if self.want_relus:
            calls: dict[str, int] = {}

            def make(name: str) -> Callable[..., None]:
                def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
                    calls[name] = calls.get(name, 0) + 1
                    key = name if calls[name] == 1 else f"{name}#{calls[name]}"
                    found.relus[key] = out

                return hook

            handles += [m.register_forward_hook(make(n)) for n, m in self._relu_modules]
        if self.want_penultimate and self._last_module is not None:

            def pre(_m: nn.Module, inp: tuple[Any, ...]) -> None:
                u = inp[0]
                found.features = u.reshape(u.shape[0], -1)

            handles.append(self._last_module.register_forward_pre_hook(pre))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> Captured:
        """Logits and the captured values for one batch ``x``."""
        if self._graph is None:
            found = Captured(logits=torch.empty(0))
            with self._hooks(found):
                found.logits = _first_tensor(self.model(x))
            return found
        b = self._static_batch
        if b is None or x.shape[0] == b:
            return self._run_graph(x)
        parts = []
        for start in range(0, x.shape[0], b):  # fixed-batch programs: pad the last chunk
            chunk = x[start : start + b]
            size = chunk.shape[0]
            if size < b:
                chunk = torch.cat([chunk, chunk.new_zeros((b - size, *chunk.shape[1:]))])
            parts.append(_slice(self._run_graph(chunk), size))
        return _concat(parts)

    def _run_graph(self, x: torch.Tensor) -> Captured:
        assert self._graph is not None
        rec = _Recorder(self._graph, self._relu_nodes, self._last_node)
        rec.found.logits = _first_tensor(rec.run(x))
        return rec.found

    def batches(self, x: torch.Tensor, batch_size: int) -> Iterator[tuple[int, Captured]]:
        """Run ``x`` in batches; yields (start index, captured)."""
        for start in range(0, x.shape[0], max(1, batch_size)):
            yield start, self.run(x[start : start + batch_size])


def _slice(c: Captured, size: int) -> Captured:
    return Captured(
        c.logits[:size],
        None if c.features is None else c.features[:size],
        {k: v[:size] for k, v in c.relus.items()},
    )


def _concat(parts: list[Captured]) -> Captured:
    first = parts[0]
    return Captured(
        torch.cat([p.logits for p in parts]),
        None if first.features is None else torch.cat([p.features for p in parts]),  # type: ignore[misc]
        {k: torch.cat([p.relus[k] for p in parts]) for k in first.relus},
    )


def penultimate_features(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, Classifier]:
    """The inputs of the last affine map (n, p), the logits (n, K) and that map.

    Raises:
        UnsupportedModel: see :class:`FeatureExtractor`.
    """
    ex = FeatureExtractor(model, x[:1], penultimate=True)
    feats, logits = [], []
    for _, c in ex.batches(x, batch_size):
        if c.features is None:
            raise UnsupportedModel("the last affine layer was not called in the forward pass")
        feats.append(c.features)
        logits.append(c.logits)
    assert ex.classifier is not None
    return torch.cat(feats), torch.cat(logits), ex.classifier
