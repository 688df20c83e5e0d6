"""LeNet-5 (:class:`genscope.io.zoo.nets.LeNet5`), whose fully-connected head depends on the
input size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genscope.io.zoo import params
from genscope.io.zoo.architecture import Architecture, Config
from genscope.io.zoo.fields import (
    Field,
    bad_config,
    in_channels_field,
    input_size_field,
    num_classes_field,
)

if TYPE_CHECKING:
    from torch import nn

#: Paddings of (conv1, conv2) by config name.
PADDINGS = {"same": (2, 2), "classic": (2, 0), "valid": (0, 0)}


def final_size(input_size: int, padding: str) -> int:
    """Spatial size after LeNet's second pool (<= 0 when the input is too small).

    >>> final_size(32, "valid"), final_size(28, "classic"), final_size(8, "same")
    (5, 5, 2)
    """
    p1, p2 = PADDINGS[padding]
    s = (input_size + 2 * p1 - 4) // 2  # conv1 (5x5), pool
    return (s + 2 * p2 - 4) // 2 if s >= 1 else 0  # conv2 (5x5), pool


def _min_size(padding: str) -> int:
    size = 1
    while final_size(size, padding) < 1:
        size += 1
    return size


def cross_check(cfg: Config) -> None:
    """The input must survive both conv-pool stages with the chosen padding."""
    if final_size(cfg["input_size"], cfg["padding"]) < 1:
        need = _min_size(cfg["padding"])
        raise bad_config(
            "lenet",
            "input_size",
            f"lenet: 'input_size' must be >= {need} with padding {cfg['padding']!r}; got "
            f"{cfg['input_size']} (use padding 'same' for inputs down to 4x4, e.g. 8x8 digits)",
            cfg["input_size"],
        )


def count_params(cfg: Config) -> int:
    """conv1 (6, 5x5), conv2 (16, 5x5), fc1 (120) on the final map, fc2 (84), fc3."""
    final = final_size(cfg["input_size"], cfg["padding"])
    return (
        params.conv(cfg["in_channels"], 6, 5, True)
        + params.conv(6, 16, 5, True)
        + params.linear(16 * final * final, 120)
        + params.linear(120, 84)
        + params.linear(84, cfg["num_classes"])
    )


def build(cfg: Config) -> nn.Module:
    """A :class:`~genscope.io.zoo.nets.LeNet5` from a full config (imports torch)."""
    from genscope.io.zoo.nets import LeNet5

    return LeNet5(
        cfg["in_channels"],
        cfg["num_classes"],
        cfg["input_size"],
        cfg["activation"],
        cfg["padding"],
    )


ARCHITECTURE = Architecture(
    name="lenet",
    description="LeNet-5: conv 6 - pool - conv 16 - pool - fc 120 - fc 84 - fc classes "
    "(LeCun et al. 1998), max-pooling.",
    fields=(
        num_classes_field(),
        in_channels_field(),
        input_size_field(
            4, "Fixes the size of fc1. Minimum 4 with padding 'same', 12 'classic', 16 'valid'."
        ),
        Field(
            "activation",
            "str",
            "relu",
            "Activation after each conv and hidden fc.",
            choices=("relu", "tanh"),
        ),
        Field(
            "padding",
            "str",
            "same",
            "Conv paddings: 'same' (2, 2) works down to 4x4 inputs (digits); 'classic' (2, 0) is "
            "LeNet-5 on 28x28 MNIST; 'valid' (0, 0) is LeNet-5 on 32x32 as in LeCun et al. 1998.",
            choices=tuple(PADDINGS),
        ),
    ),
    count_params=count_params,
    build=build,
    size_keys=("input_size",),
    cross_check=cross_check,
)
