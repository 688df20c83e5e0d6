"""Zoo configs: fields with types, defaults and ranges; validation; arithmetic parameter counts.

Everything here works on plain dicts and allocates no tensor, so an absurd config is refused
before anything is built (see :mod:`genscope.io.zoo`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from genscope.errors import BadArchitecture

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

LENET_PADDINGS = {"same": (2, 2), "classic": (2, 0), "valid": (0, 0)}
_VGG_CFGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M") + (512, 512, 512, 512, "M") * 2,
}
RESNET_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_RESNET_CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}

FIELDS: dict[str, tuple[_Field, ...]] = {
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
        _Field("activation", "str", "relu", "Hidden activation.", choices=tuple(ACTIVATIONS)),
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
            choices=tuple(LENET_PADDINGS),
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

DESCRIPTIONS: dict[str, str] = {
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


def lookup(name: Any) -> str:
    if not isinstance(name, str):
        raise _bad(
            str(name),
            None,
            f"architecture name must be a string; got {type(name).__name__}",
            name,
        )
    key = name.strip().lower()
    if key not in FIELDS:
        hint = ""
        if key.startswith("resnet") and key[6:].isdigit():
            hint = f" (use 'resnet' with {{\"depth\": {key[6:]}}})"
        raise BadArchitecture(
            f"unknown architecture {name!r}{hint}; known: {', '.join(ARCH_NAMES)}",
            {"arch": name, "known": list(ARCH_NAMES)},
        )
    return key


def normalise(name: Any, config: Any) -> tuple[str, dict[str, Any]]:
    """Validate everything except the parameter cap; return (arch, full config)."""
    arch = lookup(name)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _bad(
            arch,
            None,
            f"{arch}: the config must be a JSON object (dict); got {type(config).__name__}",
        )
    fields = {f.name: f for f in FIELDS[arch]}
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
    for f in FIELDS[arch]:
        value = config.get(f.name)
        if value is None:
            out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        else:
            out[f.name] = _coerce(arch, f, value)
    _CROSS_CHECKS[arch](out)
    return arch, out


def lenet_final_size(input_size: int, padding: str) -> int:
    """Spatial size after LeNet's second pool (<= 0 when the input is too small)."""
    p1, p2 = LENET_PADDINGS[padding]
    s = (input_size + 2 * p1 - 4) // 2  # conv1 (5x5), pool
    return (s + 2 * p2 - 4) // 2 if s >= 1 else 0  # conv2 (5x5), pool


def _lenet_min_size(padding: str) -> int:
    size = 1
    while lenet_final_size(size, padding) < 1:
        size += 1
    return size


def _check_lenet(cfg: dict[str, Any]) -> None:
    final = lenet_final_size(cfg["input_size"], cfg["padding"])
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
    imagenet = depth in RESNET_IMAGENET_BLOCKS
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
    final = lenet_final_size(cfg["input_size"], cfg["padding"])
    return (
        _conv(cfg["in_channels"], 6, 5, True)
        + _conv(6, 16, 5, True)
        + _linear(16 * final * final, 120)
        + _linear(120, 84)
        + _linear(84, cfg["num_classes"])
    )


def vgg_channels(cfg: dict[str, Any]) -> list[int | str]:
    wm = cfg["width_multiplier"]
    return [v if v == "M" else max(1, round(int(v) * wm)) for v in _VGG_CFGS[cfg["depth"]]]


def _count_vgg(cfg: dict[str, Any]) -> int:
    total, cin = 0, cfg["in_channels"]
    for v in vgg_channels(cfg):
        if v == "M":
            continue
        c = int(v)
        total += _conv(cin, c, 3, True) + (_bn(c) if cfg["batchnorm"] else 0)
        cin = c
    return total + _linear(cin, cfg["num_classes"])


def resnet_stages(cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(planes, num_blocks, stride) per stage."""
    w, depth = cfg["width"], cfg["depth"]
    if depth in RESNET_IMAGENET_BLOCKS:
        blocks = RESNET_IMAGENET_BLOCKS[depth]
        return [(w * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    n = (depth - 2) // 6
    return [(w, n, 1), (2 * w, n, 2), (4 * w, n, 2)]


def _count_resnet(cfg: dict[str, Any]) -> int:
    w = cfg["width"]
    stem_k = 3 if cfg["cifar_stem"] or cfg["depth"] not in RESNET_IMAGENET_BLOCKS else 7
    total = _conv(cfg["in_channels"], w, stem_k, False) + _bn(w)
    cin = w
    for planes, n, stride in resnet_stages(cfg):
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


COUNTERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "mlp": _count_mlp,
    "lenet": _count_lenet,
    "vgg": _count_vgg,
    "resnet": _count_resnet,
    "preact_resnet18": _count_preact,
    "wide_resnet": _count_wide_resnet,
    "nin": _count_nin,
}


# --------------------------------------------------------------------------------------------
