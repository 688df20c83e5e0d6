"""Pre-activation ResNet-18 (:class:`genscope.io.zoo.nets.PreActResNet18`)."""

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


def count_params(cfg: Config) -> int:
    """Stem conv; per block BN + conv, BN + conv, a 1x1 shortcut conv where the shape changes;
    the optional final BN; the Linear head."""
    w = cfg["width"]
    total = params.conv(cfg["in_channels"], w, 3, False)
    cin = w
    for i, n in enumerate((2, 2, 2, 2)):
        planes = w * 2**i
        for j in range(n):
            s = (1 if i == 0 else 2) if j == 0 else 1
            total += params.batchnorm(cin) + params.conv(cin, planes, 3, False)
            total += params.batchnorm(planes) + params.conv(planes, planes, 3, False)
            if s != 1 or cin != planes:
                total += params.conv(cin, planes, 1, False)
            cin = planes
    if cfg["final_bn"]:
        total += params.batchnorm(cin)
    return total + params.linear(cin, cfg["num_classes"])


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.PreActResNet18` from a full config (imports torch)."""
    from genscope.io.zoo.nets import PreActResNet18

    return PreActResNet18(cfg["in_channels"], cfg["num_classes"], cfg["width"], cfg["final_bn"])


ARCHITECTURE = Architecture(
    name="preact_resnet18",
    description="Pre-activation ResNet-18 (He et al. 2016b, Identity Mappings), "
    "kuangliu/pytorch-cifar names.",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(1, ANY_SIZE),
        Field("width", "int", 64, "Base width (channels of the first stage).", min=1, max=4096),
        Field(
            "final_bn",
            "bool",
            False,
            "Final BN + ReLU before pooling (module 'bn', as in He et al. 2016b and Rice et al. "
            "2020); kuangliu/pytorch-cifar has none.",
        ),
    ),
    count_params=count_params,
    build=build,
    size_keys=("width",),
)
