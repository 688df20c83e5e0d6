"""The model zoo: the architectures generalization studies use, each behind a validated config.

Every architecture is addressed by a name (:data:`ARCH_NAMES`) and a JSON-able config dict.
:func:`validate_config` fills in the defaults and refuses unknown keys, wrong types, out-of-range
values and absurd sizes with :class:`~genscope.errors.BadArchitecture` *before anything is
allocated*: the parameter count is computed arithmetically (:func:`estimate_num_params`) and
compared to :data:`MAX_PARAMS`, never by building the model. :func:`build_model` validates, then
builds with deterministic initialisation given torch's global seed.

All models:

* take ``(N, C, H, W)`` images (the MLP takes anything and flattens it) and return logits
  ``(N, num_classes)``;
* use no in-place operations (``nn.ReLU()`` without ``inplace``), so ``torch.func``
  (``functional_call``, ``jvp``, ``vjp``, HVPs) works through them;
* are ``torch.export``-able and ``torch.jit.script``-able;
* end with adaptive average pooling where the architecture has global pooling, so any input size
  works (``input_size`` is then used only for validation); LeNet's fully-connected head depends
  on ``input_size`` (see :class:`LeNet5`).

Minimum input sizes: LeNet 4 (``padding="same"``), 12 (``"classic"``), 16 (``"valid"``); every
other conv net accepts any size >= 1 (the 8x8 ``digits`` images included, with
``in_channels=1``).

Parameter names follow the reference implementations so that their state dicts load as they
are: torchvision for ResNet-18/34, kuangliu/pytorch-cifar for VGG and PreAct ResNet-18,
xternalz/WideResNet-pytorch for Wide ResNets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genscope.errors import BadArchitecture

__all__ = [
    "ARCH_NAMES",
    "MAX_PARAMS",
    "build_model",
    "describe_architectures",
    "estimate_num_params",
    "validate_config",
]

#: Largest parameter count a zoo config may have (estimated arithmetically before building).
MAX_PARAMS = 500_000_000

ARCH_NAMES: tuple[str, ...] = (
    "mlp",
    "lenet",
    "vgg",
    "resnet",
    "preact_resnet18",
    "wide_resnet",
    "nin",
)

_MISSING = object()


# --------------------------------------------------------------------------------------------
# Config fields and validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One config key: its JSON type, default, help text and allowed values."""

    name: str
    type: str  # "int" | "float" | "bool" | "str" | "list[int]"
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    max_len: int | None = None  # for list[int]
    exclusive_max: bool = False  # for floats such as dropout in [0, 1)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
            "help": self.help,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


def _bad(arch: str, key: str | None, message: str, value: Any = _MISSING) -> BadArchitecture:
    detail: dict[str, Any] = {"arch": arch}
    if key is not None:
        detail["key"] = key
    if value is not _MISSING:
        plain = isinstance(value, (int, str, bool)) or (
            isinstance(value, float) and math.isfinite(value)
        )
        detail["value"] = value if plain else repr(value)  # always JSON-able
    return BadArchitecture(message, detail)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(arch: str, f: _Field, value: float, what: str | None = None) -> None:
    label = what or f"'{f.name}'"
    if f.min is not None and value < f.min:
        raise _bad(arch, f.name, f"{arch}: {label} must be >= {f.min}; got {value}", value)
    if f.max is not None:
        if f.exclusive_max and value >= f.max:
            raise _bad(arch, f.name, f"{arch}: {label} must be < {f.max}; got {value}", value)
        if value > f.max:
            raise _bad(arch, f.name, f"{arch}: {label} must be <= {f.max}; got {value}", value)


def _coerce(arch: str, f: _Field, value: Any) -> Any:
    """Check one value against its field and return it normalised (JSON-able)."""
    if f.type == "int":
        if not _is_int(value):
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' must be an integer; got {type(value).__name__} "
                f"{_short(value)}",
                value,
            )
        out: Any = int(value)
    elif f.type == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' must be a number; got {type(value).__name__} {_short(value)}",
                value,
            )
        out = float(value)
        if not math.isfinite(out):
            raise _bad(arch, f.name, f"{arch}: '{f.name}' must be finite; got {out}", value)
    elif f.type == "bool":
        if not isinstance(value, bool):
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' must be true or false; got {type(value).__name__} "
                f"{_short(value)}",
                value,
            )
        out = value
    elif f.type == "str":
        if not isinstance(value, str):
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' must be a string; got {type(value).__name__} {_short(value)}",
                value,
            )
        out = value.strip().lower()
    elif f.type == "list[int]":
        if not isinstance(value, (list, tuple)):
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' must be a list of integers; got {type(value).__name__} "
                f"{_short(value)}",
                value,
            )
        if f.max_len is not None and len(value) > f.max_len:
            raise _bad(
                arch,
                f.name,
                f"{arch}: '{f.name}' may have at most {f.max_len} entries; got {len(value)}",
                len(value),
            )
        items: list[int] = []
        for i, item in enumerate(value):
            if not _is_int(item):
                raise _bad(
                    arch,
                    f.name,
                    f"{arch}: '{f.name}[{i}]' must be an integer; got {type(item).__name__} "
                    f"{_short(item)}",
                    item,
                )
            _check_range(arch, f, item, what=f"'{f.name}[{i}]'")
            items.append(int(item))
        return items
    else:  # pragma: no cover - programming error in a field table
        raise AssertionError(f"unknown field type {f.type}")

    if f.choices is not None and out not in f.choices:
        allowed = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in f.choices)
        raise _bad(
            arch,
            f.name,
            f"{arch}: '{f.name}' must be one of {allowed}; got {_short(value)}",
            value,
        )
    if f.type in ("int", "float"):
        _check_range(arch, f, out)
    return out


def _num_classes() -> _Field:
    return _Field(
        "num_classes", "int", 10, "Number of output classes (logits).", min=1, max=100_000
    )


def _in_channels() -> _Field:
    return _Field(
        "in_channels",
        "int",
        3,
        "Input image channels (3 for CIFAR, 1 for digits/MNIST).",
        min=1,
        max=1024,
    )


def _input_size(minimum: int, note: str) -> _Field:
    return _Field(
        "input_size",
        "int",
        32,
        f"Input height = width in pixels. {note}",
        min=minimum,
        max=4096,
    )


_ANY_SIZE = "Adaptive pooling: any size >= 1 works (8 for digits); used for validation only."

_LENET_PADDINGS = {"same": (2, 2), "classic": (2, 0), "valid": (0, 0)}
_VGG_CFGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M") + (512, 512, 512, 512, "M") * 2,
}
_RESNET_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_RESNET_CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}

_FIELDS: dict[str, tuple[_Field, ...]] = {
    "mlp": (
        _num_classes(),
        _Field(
            "input_dim",
            "int",
            3072,
            "Flattened input size (64 for 8x8 digits, 784 for MNIST, 3072 for CIFAR, 2 for moons).",
            min=1,
            max=10_000_000,
        ),
        _Field(
            "widths",
            "list[int]",
            (512, 512),
            "Hidden layer widths (each 1..100000, at most 1000 layers); [] gives a linear "
            "(softmax-regression) model.",
            min=1,
            max=100_000,
            max_len=1000,
        ),
        _Field("activation", "str", "relu", "Hidden activation.", choices=tuple(_ACTIVATIONS)),
        _Field("bias", "bool", True, "Biases in every Linear layer."),
        _Field(
            "batchnorm",
            "bool",
            False,
            "BatchNorm1d after each hidden Linear, before the activation.",
        ),
        _Field(
            "dropout",
            "float",
            0.0,
            "Dropout probability in [0, 1) after each hidden activation.",
            min=0.0,
            max=1.0,
            exclusive_max=True,
        ),
    ),
    "lenet": (
        _num_classes(),
        _in_channels(),
        _input_size(
            4, "Fixes the size of fc1. Minimum 4 with padding 'same', 12 'classic', 16 'valid'."
        ),
        _Field(
            "activation",
            "str",
            "relu",
            "Activation after each conv and hidden fc.",
            choices=("relu", "tanh"),
        ),
        _Field(
            "padding",
            "str",
            "same",
            "Conv paddings: 'same' (2, 2) works down to 4x4 inputs (digits); 'classic' (2, 0) is "
            "LeNet-5 on 28x28 MNIST; 'valid' (0, 0) is LeNet-5 on 32x32 as in LeCun et al. 1998.",
            choices=tuple(_LENET_PADDINGS),
        ),
    ),
    "vgg": (
        _num_classes(),
        _in_channels(),
        _input_size(1, _ANY_SIZE),
        _Field("depth", "int", 16, "VGG-11/13/16/19 (CIFAR variant).", choices=(11, 13, 16, 19)),
        _Field("batchnorm", "bool", True, "BatchNorm after every conv."),
        _Field(
            "width_multiplier",
            "float",
            1.0,
            "Scales every conv's channels (round, at least 1).",
            min=0.01,
            max=64.0,
        ),
    ),
    "resnet": (
        _num_classes(),
        _in_channels(),
        _input_size(1, _ANY_SIZE),
        _Field(
            "depth",
            "int",
            18,
            "18/34: ResNet-18/34 with torchvision's names; 8, 14, 20, 32, 44, 56, 110: CIFAR "
            "ResNet (3 stages, projection shortcuts).",
            choices=(18, 34, *_RESNET_CIFAR_DEPTHS),
        ),
        _Field(
            "cifar_stem",
            "bool",
            True,
            "Depth 18/34 only: true = 3x3 stride-1 conv and no max-pool (CIFAR); false = "
            "torchvision's 7x7 stride-2 conv + max-pool. CIFAR depths always use the 3x3 stem.",
        ),
        _Field(
            "width",
            "int",
            None,
            "Base width (channels of the first stage); default 16 for CIFAR depths, 64 for 18/34.",
            min=1,
            max=4096,
        ),
    ),
    "preact_resnet18": (
        _num_classes(),
        _in_channels(),
        _input_size(1, _ANY_SIZE),
        _Field("width", "int", 64, "Base width (channels of the first stage).", min=1, max=4096),
        _Field(
            "final_bn",
            "bool",
            False,
            "Final BN + ReLU before pooling (module 'bn', as in He et al. 2016b and Rice et al. "
            "2020); kuangliu/pytorch-cifar has none.",
        ),
    ),
    "wide_resnet": (
        _num_classes(),
        _in_channels(),
        _input_size(1, _ANY_SIZE),
        _Field("depth", "int", 28, "Total depth; (depth - 4) % 6 == 0.", min=10, max=1000),
        _Field("widen_factor", "int", 10, "k in WRN-depth-k.", min=1, max=64),
        _Field(
            "dropout",
            "float",
            0.0,
            "Dropout probability in [0, 1) between the two convs of each block.",
            min=0.0,
            max=1.0,
            exclusive_max=True,
        ),
    ),
    "nin": (
        _num_classes(),
        _in_channels(),
        _input_size(1, _ANY_SIZE),
        _Field("depth", "int", 3, "Number of NiN blocks.", min=1, max=64),
        _Field(
            "width",
            "int",
            192,
            "Channels of every block (192 as in Lin et al. 2014).",
            min=1,
            max=65_536,
        ),
        _Field(
            "kernel_size",
            "int",
            3,
            "Size of the first (spatial) conv of each block.",
            choices=(1, 3, 5, 7),
        ),
        _Field("stride", "int", 2, "Stride of the first conv of each block.", min=1, max=4),
        _Field("batchnorm", "bool", True, "BatchNorm after every conv of the blocks."),
        _Field(
            "dropout",
            "float",
            0.0,
            "Dropout probability in [0, 1) after each block.",
            min=0.0,
            max=1.0,
            exclusive_max=True,
        ),
    ),
}

_DESCRIPTIONS: dict[str, str] = {
    "mlp": "Fully-connected network on the flattened input (Zhang et al. 2017; Neyshabur et al. "
    "2019 use such MLPs in generalization studies).",
    "lenet": "LeNet-5: conv 6 - pool - conv 16 - pool - fc 120 - fc 84 - fc classes "
    "(LeCun et al. 1998), max-pooling.",
    "vgg": "VGG-11/13/16/19 for CIFAR (Simonyan & Zisserman 2015): 3x3 conv stack with optional "
    "BatchNorm, one Linear classifier (kuangliu/pytorch-cifar names).",
    "resnet": "ResNet (He et al. 2016): CIFAR ResNet-20/32/44/56/110 or ResNet-18/34 with "
    "torchvision's parameter names.",
    "preact_resnet18": "Pre-activation ResNet-18 (He et al. 2016b, Identity Mappings), "
    "kuangliu/pytorch-cifar names.",
    "wide_resnet": "Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), "
    "xternalz/WideResNet-pytorch names.",
    "nin": "Network-in-Network (Lin et al. 2014) as in the PGDL competition task models "
    "(Jiang et al. 2020): blocks of kxk conv, 1x1 conv, 1x1 conv, each with BN + ReLU; "
    "a final 1x1 conv to num_classes and global average pooling.",
}


def _lookup(name: Any) -> str:
    if not isinstance(name, str):
        raise _bad(
            str(name),
            None,
            f"architecture name must be a string; got {type(name).__name__}",
            name,
        )
    key = name.strip().lower()
    if key not in _FIELDS:
        hint = ""
        if key.startswith("resnet") and key[6:].isdigit():
            hint = f" (use 'resnet' with {{\"depth\": {key[6:]}}})"
        raise BadArchitecture(
            f"unknown architecture {name!r}{hint}; known: {', '.join(ARCH_NAMES)}",
            {"arch": name, "known": list(ARCH_NAMES)},
        )
    return key


def _normalise(name: Any, config: Any) -> tuple[str, dict[str, Any]]:
    """Validate everything except the parameter cap; return (arch, full config)."""
    arch = _lookup(name)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _bad(
            arch,
            None,
            f"{arch}: the config must be a JSON object (dict); got {type(config).__name__}",
        )
    fields = {f.name: f for f in _FIELDS[arch]}
    unknown = [k for k in config if k not in fields]
    if unknown:
        bad_key = unknown[0]
        raise _bad(
            arch,
            str(bad_key),
            f"{arch}: unknown config key {', '.join(repr(k) for k in unknown)}; "
            f"allowed: {', '.join(fields)}",
        )
    out: dict[str, Any] = {}
    for f in _FIELDS[arch]:
        value = config.get(f.name)
        if value is None:
            out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        else:
            out[f.name] = _coerce(arch, f, value)
    _CROSS_CHECKS[arch](out)
    return arch, out


def _lenet_final_size(input_size: int, padding: str) -> int:
    """Spatial size after LeNet's second pool (<= 0 when the input is too small)."""
    p1, p2 = _LENET_PADDINGS[padding]
    s = (input_size + 2 * p1 - 4) // 2  # conv1 (5x5), pool
    return (s + 2 * p2 - 4) // 2 if s >= 1 else 0  # conv2 (5x5), pool


def _lenet_min_size(padding: str) -> int:
    size = 1
    while _lenet_final_size(size, padding) < 1:
        size += 1
    return size


def _check_lenet(cfg: dict[str, Any]) -> None:
    final = _lenet_final_size(cfg["input_size"], cfg["padding"])
    if final < 1:
        need = _lenet_min_size(cfg["padding"])
        raise _bad(
            "lenet",
            "input_size",
            f"lenet: 'input_size' must be >= {need} with padding {cfg['padding']!r}; got "
            f"{cfg['input_size']} (use padding 'same' for inputs down to 4x4, e.g. 8x8 digits)",
            cfg["input_size"],
        )


def _no_cross_check(cfg: dict[str, Any]) -> None:
    """Architectures whose keys are independent of each other."""


def _check_resnet(cfg: dict[str, Any]) -> None:
    depth = cfg["depth"]
    imagenet = depth in _RESNET_IMAGENET_BLOCKS
    if not imagenet and not cfg["cifar_stem"]:
        raise _bad(
            "resnet",
            "cifar_stem",
            f"resnet: 'cifar_stem' false (torchvision's 7x7 stem) is only available for depth "
            f"18 and 34; got depth {depth}",
            False,
        )
    if cfg["width"] is None:
        cfg["width"] = 64 if imagenet else 16


def _check_wide_resnet(cfg: dict[str, Any]) -> None:
    if (cfg["depth"] - 4) % 6 != 0:
        raise _bad(
            "wide_resnet",
            "depth",
            f"wide_resnet: 'depth' must satisfy (depth - 4) % 6 == 0 (10, 16, 22, 28, 34, 40, "
            f"...); got {cfg['depth']}",
            cfg["depth"],
        )


_CROSS_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "mlp": _no_cross_check,
    "lenet": _check_lenet,
    "vgg": _no_cross_check,
    "resnet": _check_resnet,
    "preact_resnet18": _no_cross_check,
    "wide_resnet": _check_wide_resnet,
    "nin": _no_cross_check,
}


# --------------------------------------------------------------------------------------------
# Arithmetic parameter counts (must equal sum(p.numel() for p in model.parameters()))
# --------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, bias: bool) -> int:
    return cout * cin * k * k + (cout if bias else 0)


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _count_mlp(cfg: dict[str, Any]) -> int:
    dims = [cfg["input_dim"], *cfg["widths"], cfg["num_classes"]]
    total = sum(_linear(a, b, cfg["bias"]) for a, b in itertools.pairwise(dims))
    if cfg["batchnorm"]:
        total += sum(_bn(w) for w in cfg["widths"])
    return total


def _count_lenet(cfg: dict[str, Any]) -> int:
    final = _lenet_final_size(cfg["input_size"], cfg["padding"])
    return (
        _conv(cfg["in_channels"], 6, 5, True)
        + _conv(6, 16, 5, True)
        + _linear(16 * final * final, 120)
        + _linear(120, 84)
        + _linear(84, cfg["num_classes"])
    )


def _vgg_channels(cfg: dict[str, Any]) -> list[int | str]:
    wm = cfg["width_multiplier"]
    return [v if v == "M" else max(1, round(int(v) * wm)) for v in _VGG_CFGS[cfg["depth"]]]


def _count_vgg(cfg: dict[str, Any]) -> int:
    total, cin = 0, cfg["in_channels"]
    for v in _vgg_channels(cfg):
        if v == "M":
            continue
        c = int(v)
        total += _conv(cin, c, 3, True) + (_bn(c) if cfg["batchnorm"] else 0)
        cin = c
    return total + _linear(cin, cfg["num_classes"])


def _resnet_stages(cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(planes, num_blocks, stride) per stage."""
    w, depth = cfg["width"], cfg["depth"]
    if depth in _RESNET_IMAGENET_BLOCKS:
        blocks = _RESNET_IMAGENET_BLOCKS[depth]
        return [(w * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    n = (depth - 2) // 6
    return [(w, n, 1), (2 * w, n, 2), (4 * w, n, 2)]


def _count_resnet(cfg: dict[str, Any]) -> int:
    w = cfg["width"]
    stem_k = 3 if cfg["cifar_stem"] or cfg["depth"] not in _RESNET_IMAGENET_BLOCKS else 7
    total = _conv(cfg["in_channels"], w, stem_k, False) + _bn(w)
    cin = w
    for planes, n, stride in _resnet_stages(cfg):
        for i in range(n):
            s = stride if i == 0 else 1
            total += _conv(cin, planes, 3, False) + _bn(planes)
            total += _conv(planes, planes, 3, False) + _bn(planes)
            if s != 1 or cin != planes:
                total += _conv(cin, planes, 1, False) + _bn(planes)
            cin = planes
    return total + _linear(cin, cfg["num_classes"])


def _count_preact(cfg: dict[str, Any]) -> int:
    w = cfg["width"]
    total = _conv(cfg["in_channels"], w, 3, False)
    cin = w
    for i, n in enumerate((2, 2, 2, 2)):
        planes = w * 2**i
        for j in range(n):
            s = (1 if i == 0 else 2) if j == 0 else 1
            total += _bn(cin) + _conv(cin, planes, 3, False)
            total += _bn(planes) + _conv(planes, planes, 3, False)
            if s != 1 or cin != planes:
                total += _conv(cin, planes, 1, False)
            cin = planes
    if cfg["final_bn"]:
        total += _bn(cin)
    return total + _linear(cin, cfg["num_classes"])


def _count_wide_resnet(cfg: dict[str, Any]) -> int:
    k, n = cfg["widen_factor"], (cfg["depth"] - 4) // 6
    channels = (16, 16 * k, 32 * k, 64 * k)
    total = _conv(cfg["in_channels"], 16, 3, False)
    cin = 16
    for i in range(3):
        cout = channels[i + 1]
        # first block of the stage (may change channels / stride), then n - 1 equal blocks
        total += _bn(cin) + _conv(cin, cout, 3, False) + _bn(cout) + _conv(cout, cout, 3, False)
        if cin != cout or i > 0:
            total += _conv(cin, cout, 1, False)
        total += (n - 1) * (2 * _bn(cout) + 2 * _conv(cout, cout, 3, False))
        cin = cout
    return total + _bn(cin) + _linear(cin, cfg["num_classes"])


def _count_nin(cfg: dict[str, Any]) -> int:
    w, k, bn = cfg["width"], cfg["kernel_size"], cfg["batchnorm"]
    per_bn = 3 * _bn(w) if bn else 0
    first = _conv(cfg["in_channels"], w, k, True) + 2 * _conv(w, w, 1, True) + per_bn
    rest = _conv(w, w, k, True) + 2 * _conv(w, w, 1, True) + per_bn
    return first + (cfg["depth"] - 1) * rest + _conv(w, cfg["num_classes"], 1, True)


_COUNTERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "mlp": _count_mlp,
    "lenet": _count_lenet,
    "vgg": _count_vgg,
    "resnet": _count_resnet,
    "preact_resnet18": _count_preact,
    "wide_resnet": _count_wide_resnet,
    "nin": _count_nin,
}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully-connected network: ``flatten`` then ``layers`` (an ``nn.Sequential``).

    Per hidden width: ``Linear``, optional ``BatchNorm1d``, the activation, optional ``Dropout``;
    then a final ``Linear`` to the classes. Parameter names are ``layers.<i>.weight`` /
    ``layers.<i>.bias`` with ``i`` the position in that sequence (the activation always takes a
    slot, ``Identity`` included; BatchNorm and Dropout take one only when enabled).

    MLPs are the classic subjects of generalization studies: Zhang et al., "Understanding deep
    learning requires rethinking generalization", ICLR 2017; Neyshabur et al., "The role of
    over-parametrization in generalization of neural networks", ICLR 2019.
    """

    def __init__(
        self,
        input_dim: int,
        widths: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        bias: bool = True,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        fan_in = input_dim
        for w in widths:
            layers.append(nn.Linear(fan_in, w, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = w
        layers.append(nn.Linear(fan_in, num_classes, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
    recognition", Proc. IEEE 1998), in its common modern form: ReLU (or tanh) and max-pooling.

    ``conv1`` (5x5, 6 channels) - pool - ``conv2`` (5x5, 16) - pool - ``fc1`` (120) - ``fc2``
    (84) - ``fc3`` (classes). Paddings of (conv1, conv2): ``"same"`` = (2, 2), which keeps the
    spatial size through each conv so that inputs down to 4x4 work (8x8 digits: fc1 sees 16x2x2);
    ``"classic"`` = (2, 0), LeNet-5 on 28x28 MNIST (fc1 sees 16x5x5); ``"valid"`` = (0, 0),
    LeNet-5 on 32x32 inputs as in the paper and kuangliu/pytorch-cifar (16x5x5).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str = "relu",
        padding: str = "same",
    ) -> None:
        super().__init__()
        p1, p2 = _LENET_PADDINGS[padding]
        final = _lenet_final_size(input_size, padding)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=p1)
        self.act1 = _ACTIVATIONS[activation]()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=p2)
        self.act2 = _ACTIVATIONS[activation]()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * final * final, 120)
        self.act3 = _ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = _ACTIVATIONS[activation]()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.flatten(x)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


class VGG(nn.Module):
    """VGG for CIFAR (Simonyan & Zisserman, "Very deep convolutional networks for large-scale
    image recognition", ICLR 2015), as in kuangliu/pytorch-cifar: ``features`` (3x3 convs with
    bias, optional BatchNorm, ReLU, 2x2 max-pools) then one ``classifier`` Linear.

    Deviations, neither of which changes a parameter: the max-pools use ``ceil_mode=True`` so that
    inputs smaller than 32x32 (8x8 digits) never pool to zero (identical for sizes that are powers
    of two), and global adaptive average pooling replaces the 1x1 average pool, so any input size
    works (identical for 32x32 inputs, where the features are already 1x1).
    """

    def __init__(
        self,
        channels: Sequence[int | str],
        in_channels: int,
        num_classes: int,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in channels:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            c = int(v)
            layers.append(nn.Conv2d(cin, c, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            cin = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    """ResNet basic block with torchvision's names (``conv1``, ``bn1``, ``conv2``, ``bn2``,
    ``downsample.0`` = 1x1 conv, ``downsample.1`` = BN); He et al. 2016."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet (He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016).

    One class, torchvision's module names throughout (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1``..``layer4``, ``avgpool``, ``fc``; blocks as :class:`BasicBlock`):

    * depth 18/34: torchvision's ``resnet18``/``resnet34`` (stages of 64/128/256/512 x width/64
      channels). With ``cifar_stem=False`` the modules, names, shapes and initialisation are
      exactly torchvision's (7x7 stride-2 conv + 3x3 stride-2 max-pool), so a torchvision state
      dict loads as it is; with ``cifar_stem=True`` (the CIFAR convention, e.g.
      kuangliu/pytorch-cifar) ``conv1`` is 3x3 stride 1 and ``maxpool`` is an ``Identity``.
    * depth 6n+2 (20, 32, 44, 56, 110; also 8, 14): the CIFAR ResNet of the paper's section 4.2,
      three stages of n blocks with width/2*width/4*width channels (16/32/64 by default).
      Shortcuts that change shape use projection (the paper's option B: 1x1 conv + BN, in
      ``downsample``) rather than option A's zero padding, so every block is a plain module and
      the names match the 18/34 family; ``layer4`` is an ``Identity``.
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int, int]],
        in_channels: int,
        num_classes: int,
        width: int,
        imagenet_stem: bool,
    ) -> None:
        super().__init__()
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        )
        layers: list[nn.Module] = []
        cin = width
        for planes, n, stride in stages:
            blocks = [BasicBlock(cin, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            cin = planes
        while len(layers) < 4:
            layers.append(nn.Identity())
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b), kuangliu/pytorch-cifar names: ``bn1``,
    ``conv1``, ``bn2``, ``conv2``, ``shortcut.0`` (1x1 conv, taken after ``bn1``-ReLU)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x
        if self.shortcut is not None:
            shortcut = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (He, Zhang, Ren & Sun, "Identity mappings in deep residual
    networks", ECCV 2016), the CIFAR implementation of kuangliu/pytorch-cifar: ``conv1`` (3x3,
    stride 1), ``layer1``..``layer4`` of :class:`PreActBlock`, global average pooling,
    ``linear``. With ``final_bn`` a BN + ReLU (module ``bn``) precedes the pooling, as in the
    paper and in Rice, Wong & Kolter 2020. Adaptive pooling replaces kuangliu's ``avg_pool2d(4)``
    (identical for 32x32 inputs)."""

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 64, final_bn: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Sequential] = []
        cin = width
        for i in range(4):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(cin, planes, stride), PreActBlock(planes, planes)]
            layers.append(nn.Sequential(*blocks))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn: nn.Module = nn.BatchNorm2d(cin) if final_bn else nn.Identity()
        self.relu: nn.Module = nn.ReLU() if final_bn else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = self.relu(self.bn(out))
        return self.linear(self.flatten(self.avgpool(out)))


class WideBasic(nn.Module):
    """Wide ResNet block, pre-activation, xternalz/WideResNet-pytorch names: ``bn1``, ``relu1``,
    ``conv1``, ``bn2``, ``relu2``, ``conv2``, ``convShortcut`` (1x1, on the activated input when
    the shape changes); dropout between the two convs (Zagoruyko & Komodakis 2016)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        shortcut = x
        if self.convShortcut is not None:
            shortcut = self.convShortcut(o)
        out = self.relu2(self.bn2(self.conv1(o)))
        out = self.conv2(self.dropout(out))
        return shortcut + out


class _WideStage(nn.Module):
    """xternalz's ``NetworkBlock``: the blocks of one stage in ``layer``."""

    def __init__(
        self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        blocks = [WideBasic(in_planes, out_planes, stride, dropout)]
        blocks += [WideBasic(out_planes, out_planes, 1, dropout) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016).

    (depth - 4) / 6 pre-activation blocks in each of three stages of 16k/32k/64k channels, with
    the names of xternalz/WideResNet-pytorch (also used by RobustBench): ``conv1``,
    ``block1.layer.0.bn1``, ..., ``bn1``, ``relu``, ``fc``; its initialisation (Kaiming normal,
    fan_out; BN 1/0; fc bias 0). Global adaptive average pooling (identical to its
    ``avg_pool2d(8)`` on 32x32 inputs).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        ch = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, ch[0], ch[1], 1, dropout)
        self.block2 = _WideStage(n, ch[1], ch[2], 2, dropout)
        self.block3 = _WideStage(n, ch[2], ch[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return self.fc(self.flatten(self.avgpool(out)))


class NiN(nn.Module):
    """Network-in-Network (Lin, Chen & Yan, "Network in network", ICLR 2014) in the form of the
    PGDL competition task models (Jiang et al., "NeurIPS 2020 competition: predicting
    generalization in deep learning", 2020; also Jiang et al., "Fantastic generalization
    measures and where to find them", ICLR 2020).

    ``features.<b>`` is block ``b``: a ``kernel_size`` conv with ``stride`` (default 3x3,
    stride 2, "same" padding), then two 1x1 convs, each conv followed by BN (when ``batchnorm``)
    and ReLU, then dropout when ``dropout`` > 0. ``classifier`` is a 1x1 conv to the classes,
    followed by global average pooling. The default width 192 is Lin et al.'s CIFAR width. Convs
    carry biases (the Keras default of the PGDL models).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 3,
        width: int = 192,
        kernel_size: int = 3,
        stride: int = 2,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_channels
        for _ in range(depth):
            layers: list[nn.Module] = []
            for j in range(3):
                if j == 0:
                    layers.append(
                        nn.Conv2d(cin, width, kernel_size, stride=stride, padding=kernel_size // 2)
                    )
                else:
                    layers.append(nn.Conv2d(width, width, 1))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            cin = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.classifier(self.features(x))))


def _build_mlp(cfg: dict[str, Any]) -> nn.Module:
    return MLP(
        cfg["input_dim"],
        cfg["widths"],
        cfg["num_classes"],
        cfg["activation"],
        cfg["bias"],
        cfg["batchnorm"],
        cfg["dropout"],
    )


def _build_lenet(cfg: dict[str, Any]) -> nn.Module:
    return LeNet5(
        cfg["in_channels"],
        cfg["num_classes"],
        cfg["input_size"],
        cfg["activation"],
        cfg["padding"],
    )


def _build_vgg(cfg: dict[str, Any]) -> nn.Module:
    return VGG(_vgg_channels(cfg), cfg["in_channels"], cfg["num_classes"], cfg["batchnorm"])


def _build_resnet(cfg: dict[str, Any]) -> nn.Module:
    imagenet_stem = cfg["depth"] in _RESNET_IMAGENET_BLOCKS and not cfg["cifar_stem"]
    return ResNet(
        _resnet_stages(cfg), cfg["in_channels"], cfg["num_classes"], cfg["width"], imagenet_stem
    )


def _build_preact(cfg: dict[str, Any]) -> nn.Module:
    return PreActResNet18(cfg["in_channels"], cfg["num_classes"], cfg["width"], cfg["final_bn"])


def _build_wide_resnet(cfg: dict[str, Any]) -> nn.Module:
    return WideResNet(
        cfg["depth"], cfg["widen_factor"], cfg["in_channels"], cfg["num_classes"], cfg["dropout"]
    )


def _build_nin(cfg: dict[str, Any]) -> nn.Module:
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


_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "mlp": _build_mlp,
    "lenet": _build_lenet,
    "vgg": _build_vgg,
    "resnet": _build_resnet,
    "preact_resnet18": _build_preact,
    "wide_resnet": _build_wide_resnet,
    "nin": _build_nin,
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def estimate_num_params(name: str, config: dict[str, Any] | None) -> int:
    """The exact number of parameters (``sum(p.numel() for p in model.parameters())``, buffers
    excluded) that :func:`build_model` would create, computed arithmetically.

    The config is validated (as :func:`validate_config`) except for the :data:`MAX_PARAMS` cap,
    so an over-large config still gets its count.

    Raises:
        BadArchitecture: unknown architecture or invalid config.
    """
    arch, cfg = _normalise(name, config)
    return _COUNTERS[arch](cfg)


def validate_config(name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a config and return it normalised, with every default filled in.

    Checks, in order: the architecture name; unknown keys; each value's type (``true`` is not an
    integer, ``16.0`` is not an integer) and range (including per-layer width caps); constraints
    between keys (ResNet/WRN depths, LeNet's minimum input size); finally the arithmetic parameter
    count against :data:`MAX_PARAMS`. Nothing is allocated. String choices are matched
    case-insensitively and returned in lower case.

    Args:
        name: one of :data:`ARCH_NAMES` (case-insensitive).
        config: JSON-like dict of overrides, or ``None`` for all defaults. ``None`` values mean
            "the default".

    Returns:
        A new dict with every field of the architecture.

    Raises:
        BadArchitecture: with ``detail = {"arch", "key"?, "value"?}`` naming the offending key.
    """
    arch, cfg = _normalise(name, config)
    count = _COUNTERS[arch](cfg)
    if count > MAX_PARAMS:
        keys = _SIZE_KEYS[arch]
        raise BadArchitecture(
            f"{arch}: this config has {count:,} parameters, above the cap of {MAX_PARAMS:,}; "
            f"reduce {' or '.join(repr(k) for k in keys)}",
            {
                "arch": arch,
                "key": keys[0],
                "keys": list(keys),
                "num_params": count,
                "max_params": MAX_PARAMS,
            },
        )
    return cfg


# The keys that drive the parameter count, named when a config is over the cap.
_SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("widths", "input_dim"),
    "lenet": ("input_size",),
    "vgg": ("width_multiplier",),
    "resnet": ("width",),
    "preact_resnet18": ("width",),
    "wide_resnet": ("widen_factor", "depth"),
    "nin": ("width", "depth"),
}


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Validate ``config`` (:func:`validate_config`), then build the model.

    Initialisation is deterministic given torch's global seed (``torch.manual_seed``). The model
    is returned in training mode, on the CPU, in float32.

    Raises:
        BadArchitecture: unknown architecture or invalid/absurd config (before any allocation).
    """
    cfg = validate_config(name, config)
    return _BUILDERS[_lookup(name)](cfg)


def describe_architectures() -> list[dict[str, Any]]:
    """Every architecture with its description and config fields, for a UI picker.

    Returns:
        ``[{"name", "description", "fields": [{"name", "type", "default", "help", "choices"?,
        "min"?, "max"?}]}]``, in :data:`ARCH_NAMES` order. A ``default`` of ``None`` means the
        default depends on other fields (said in ``help``).
    """
    return [
        {
            "name": arch,
            "description": _DESCRIPTIONS[arch],
            "fields": [f.describe() for f in _FIELDS[arch]],
        }
        for arch in ARCH_NAMES
    ]
