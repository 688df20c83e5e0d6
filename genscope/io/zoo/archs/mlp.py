"""The fully-connected network (:class:`genscope.io.zoo.nets.MLP`)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import Field, dropout_field, num_classes_field

if TYPE_CHECKING:
    from torch import nn

#: Hidden activations, by config name (the classes are in :data:`genscope.io.zoo.nets.ACTIVATIONS`).
ACTIVATION_NAMES = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu", "identity")


def count_params(cfg: Config) -> int:
    """Linear layers between consecutive widths, plus BatchNorm1d per hidden layer."""
    dims = [cfg["input_dim"], *cfg["widths"], cfg["num_classes"]]
    total = sum(params.linear(a, b, cfg["bias"]) for a, b in itertools.pairwise(dims))
    if cfg["batchnorm"]:
        total += sum(params.batchnorm(w) for w in cfg["widths"])
    return total


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.MLP` from a full config (imports torch)."""
    from genscope.io.zoo.nets import MLP

    return MLP(
        cfg["input_dim"],
        cfg["widths"],
        cfg["num_classes"],
        cfg["activation"],
        cfg["bias"],
        cfg["batchnorm"],
        cfg["dropout"],
    )


ARCHITECTURE = Architecture(
    name="mlp",
    description="Fully-connected network on the flattened input (Zhang et al. 2017; Neyshabur "
    "et al. 2019 use such MLPs in generalization studies).",
    fields=(
        num_classes_field(),
        Field(
            "input_dim",
            "int",
            3072,
            "Flattened input size (64 for 8x8 digits, 784 for MNIST, 3072 for CIFAR, 2 for moons).",
            min=1,
            max=10_000_000,
        ),
        Field(
            "widths",
            "list[int]",
            (512, 512),
            "Hidden layer widths (each 1..100000, at most 1000 layers); [] gives a linear "
            "(softmax-regression) model.",
            min=1,
            max=100_000,
            max_len=1000,
        ),
        Field("activation", "str", "relu", "Hidden activation.", choices=ACTIVATION_NAMES),
        Field("bias", "bool", True, "Biases in every Linear layer."),
        Field(
            "batchnorm",
            "bool",
            False,
            "BatchNorm1d after each hidden Linear, before the activation.",
        ),
        dropout_field("after each hidden activation"),
    ),
    count_params=count_params,
    build=build,
    size_keys=("widths", "input_dim"),
)
