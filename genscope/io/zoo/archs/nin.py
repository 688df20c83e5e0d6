"""Network-in-Network as in the PGDL task models (:class:`genscope.io.zoo.nets.NiN`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import (
    ANY_SIZE,
    Field,
    dropout_field,
    in_channels_field,
    input_size_field,
    num_classes_field,
)

if TYPE_CHECKING:
    from torch import nn


def count_params(cfg: Config) -> int:
    """Per block a kxk conv and two 1x1 convs with biases (+ 3 BN); a 1x1 classifier conv."""
    w, k, bn = cfg["width"], cfg["kernel_size"], cfg["batchnorm"]
    per_bn = 3 * params.batchnorm(w) if bn else 0
    first = params.conv(cfg["in_channels"], w, k, True) + 2 * params.conv(w, w, 1, True) + per_bn
    rest = params.conv(w, w, k, True) + 2 * params.conv(w, w, 1, True) + per_bn
    return first + (cfg["depth"] - 1) * rest + params.conv(w, cfg["num_classes"], 1, True)


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.NiN` from a full config (imports torch)."""
    from genscope.io.zoo.nets import NiN

    return NiN(
        cfg["in_channels"],
        cfg["num_classes"],
        cfg["depth"],
        cfg["width"],
        cfg["kernel_size"],
        cfg["stride"],
        cfg["batchnorm"],
        cfg["dropout"],
    )


ARCHITECTURE = Architecture(
    name="nin",
    description="Network-in-Network (Lin et al. 2014) as in the PGDL competition task models "
    "(Jiang et al. 2020): blocks of kxk conv, 1x1 conv, 1x1 conv, each with BN + ReLU; "
    "a final 1x1 conv to num_classes and global average pooling.",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(1, ANY_SIZE),
        Field("depth", "int", 3, "Number of NiN blocks.", min=1, max=64),
        Field(
            "width",
            "int",
            192,
            "Channels of every block (192 as in Lin et al. 2014).",
            min=1,
            max=65_536,
        ),
        Field(
            "kernel_size",
            "int",
            3,
            "Size of the first (spatial) conv of each block.",
            choices=(1, 3, 5, 7),
        ),
        Field("stride", "int", 2, "Stride of the first conv of each block.", min=1, max=4),
        Field("batchnorm", "bool", True, "BatchNorm after every conv of the blocks."),
        dropout_field("after each block"),
    ),
    count_params=count_params,
    build=build,
    size_keys=("width", "depth"),
)
