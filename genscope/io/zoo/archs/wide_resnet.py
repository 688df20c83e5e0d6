"""Wide ResNet WRN-depth-k (:class:`genscope.io.zoo.nets.WideResNet`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import (
    ANY_SIZE,
    Field,
    bad_config,
    dropout_field,
    in_channels_field,
    input_size_field,
    num_classes_field,
)

if TYPE_CHECKING:
    from torch import nn


def cross_check(cfg: Config) -> None:
    """Three stages of (depth - 4) / 6 blocks: the depth must be 6n + 4."""
    if (cfg["depth"] - 4) % 6 != 0:
        raise bad_config(
            "wide_resnet",
            "depth",
            f"wide_resnet: 'depth' must satisfy (depth - 4) % 6 == 0 (10, 16, 22, 28, 34, 40, "
            f"...); got {cfg['depth']}",
            cfg["depth"],
        )


def count_params(cfg: Config) -> int:
    """Stem conv; per stage a first block (BN, conv, BN, conv, 1x1 shortcut where the shape or
    stride changes) and n - 1 equal blocks; final BN and fc (Zagoruyko & Komodakis 2016)."""
    k, n = cfg["widen_factor"], (cfg["depth"] - 4) // 6
    channels = (16, 16 * k, 32 * k, 64 * k)
    total = params.conv(cfg["in_channels"], 16, 3, False)
    cin = 16
    for i in range(3):
        cout = channels[i + 1]
        total += params.batchnorm(cin) + params.conv(cin, cout, 3, False)
        total += params.batchnorm(cout) + params.conv(cout, cout, 3, False)
        if cin != cout or i > 0:
            total += params.conv(cin, cout, 1, False)
        total += (n - 1) * (2 * params.batchnorm(cout) + 2 * params.conv(cout, cout, 3, False))
        cin = cout
    return total + params.batchnorm(cin) + params.linear(cin, cfg["num_classes"])


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.WideResNet` from a full config (imports torch)."""
    from genscope.io.zoo.nets import WideResNet

    return WideResNet(
        cfg["depth"], cfg["widen_factor"], cfg["in_channels"], cfg["num_classes"], cfg["dropout"]
    )


ARCHITECTURE = Architecture(
    name="wide_resnet",
    description="Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), "
    "xternalz/WideResNet-pytorch names.",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(1, ANY_SIZE),
        Field("depth", "int", 28, "Total depth; (depth - 4) % 6 == 0.", min=10, max=1000),
        Field("widen_factor", "int", 10, "k in WRN-depth-k.", min=1, max=64),
        dropout_field("between the two convs of each block"),
    ),
    count_params=count_params,
    build=build,
    size_keys=("widen_factor", "depth"),
    cross_check=cross_check,
)
