"""VGG for CIFAR (:class:`genscope.io.zoo.nets.VGG`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import (
    ANY_SIZE,
    Field,
    in_channels_field,
    input_size_field,
    num_classes_field,
)

if TYPE_CHECKING:
    from torch import nn

#: Conv channels per depth, ``"M"`` a 2x2 max-pool (Simonyan & Zisserman 2015, table 1).
LAYOUTS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M") + (512, 512, 512, 512, "M") * 2,
}


def channels(cfg: Config) -> list[int | str]:
    """The depth's layout with every width scaled by ``width_multiplier`` (rounded, >= 1)."""
    wm = cfg["width_multiplier"]
    return [v if v == "M" else max(1, round(int(v) * wm)) for v in LAYOUTS[cfg["depth"]]]


def count_params(cfg: Config) -> int:
    """3x3 convs with bias (+ BatchNorm), then one Linear classifier."""
    total, cin = 0, cfg["in_channels"]
    for v in channels(cfg):
        if v == "M":
            continue
        c = int(v)
        total += params.conv(cin, c, 3, True) + (params.batchnorm(c) if cfg["batchnorm"] else 0)
        cin = c
    return total + params.linear(cin, cfg["num_classes"])


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.VGG` from a full config (imports torch)."""
    from genscope.io.zoo.nets import VGG

    return VGG(channels(cfg), cfg["in_channels"], cfg["num_classes"], cfg["batchnorm"])


ARCHITECTURE = Architecture(
    name="vgg",
    description="VGG-11/13/16/19 for CIFAR (Simonyan & Zisserman 2015): 3x3 conv stack with "
    "optional BatchNorm, one Linear classifier (kuangliu/pytorch-cifar names).",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(1, ANY_SIZE),
        Field("depth", "int", 16, "VGG-11/13/16/19 (CIFAR variant).", choices=(11, 13, 16, 19)),
        Field("batchnorm", "bool", True, "BatchNorm after every conv."),
        Field(
            "width_multiplier",
            "float",
            1.0,
            "Scales every conv's channels (round, at least 1).",
            min=0.01,
            max=64.0,
        ),
    ),
    count_params=count_params,
    build=build,
    size_keys=("width_multiplier",),
)
