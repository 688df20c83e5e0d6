"""ResNet (:class:`genscope.io.zoo.nets.ResNet`): CIFAR depths 6n+2 and ResNet-18/34."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import (
    ANY_SIZE,
    Field,
    bad_config,
    in_channels_field,
    input_size_field,
    num_classes_field,
)

if TYPE_CHECKING:
    from torch import nn

#: Blocks per stage of torchvision's ResNet-18/34 (He et al. 2016, table 1).
IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
#: The CIFAR ResNets of He et al. 2016, section 4.2 (6n + 2 layers).
CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


def cross_check(cfg: Config) -> None:
    """torchvision's stem exists for depth 18/34 only; the default width depends on the depth."""
    depth = cfg["depth"]
    imagenet = depth in IMAGENET_BLOCKS
    if not imagenet and not cfg["cifar_stem"]:
        raise bad_config(
            "resnet",
            "cifar_stem",
            f"resnet: 'cifar_stem' false (torchvision's 7x7 stem) is only available for depth "
            f"18 and 34; got depth {depth}",
            False,
        )
    if cfg["width"] is None:
        cfg["width"] = 64 if imagenet else 16


def stages(cfg: Config) -> list[tuple[int, int, int]]:
    """(planes, num_blocks, stride) per stage."""
    w, depth = cfg["width"], cfg["depth"]
    if depth in IMAGENET_BLOCKS:
        blocks = IMAGENET_BLOCKS[depth]
        return [(w * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    n = (depth - 2) // 6
    return [(w, n, 1), (2 * w, n, 2), (4 * w, n, 2)]


def count_params(cfg: Config) -> int:
    """Stem conv + BN, two 3x3 conv + BN per basic block, projection shortcuts, fc."""
    w = cfg["width"]
    stem_k = 3 if cfg["cifar_stem"] or cfg["depth"] not in IMAGENET_BLOCKS else 7
    total = params.conv(cfg["in_channels"], w, stem_k, False) + params.batchnorm(w)
    cin = w
    for planes, n, stride in stages(cfg):
        for i in range(n):
            s = stride if i == 0 else 1
            total += params.conv(cin, planes, 3, False) + params.batchnorm(planes)
            total += params.conv(planes, planes, 3, False) + params.batchnorm(planes)
            if s != 1 or cin != planes:
                total += params.conv(cin, planes, 1, False) + params.batchnorm(planes)
            cin = planes
    return total + params.linear(cin, cfg["num_classes"])


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.ResNet` from a full config (imports torch)."""
    from genscope.io.zoo.nets import ResNet

    imagenet_stem = cfg["depth"] in IMAGENET_BLOCKS and not cfg["cifar_stem"]
    return ResNet(stages(cfg), cfg["in_channels"], cfg["num_classes"], cfg["width"], imagenet_stem)


ARCHITECTURE = Architecture(
    name="resnet",
    description="ResNet (He et al. 2016): CIFAR ResNet-20/32/44/56/110 or ResNet-18/34 with "
    "torchvision's parameter names.",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(1, ANY_SIZE),
        Field(
            "depth",
            "int",
            18,
            "18/34: ResNet-18/34 with torchvision's names; 8, 14, 20, 32, 44, 56, 110: CIFAR "
            "ResNet (3 stages, projection shortcuts).",
            choices=(18, 34, *CIFAR_DEPTHS),
        ),
        Field(
            "cifar_stem",
            "bool",
            True,
            "Depth 18/34 only: true = 3x3 stride-1 conv and no max-pool (CIFAR); false = "
            "torchvision's 7x7 stride-2 conv + max-pool. CIFAR depths always use the 3x3 stem.",
        ),
        Field(
            "width",
            "int",
            None,
            "Base width (channels of the first stage); default 16 for CIFAR depths, 64 for 18/34.",
            min=1,
            max=4096,
        ),
    ),
    count_params=count_params,
    build=build,
    size_keys=("width",),
    cross_check=cross_check,
)
