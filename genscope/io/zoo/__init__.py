"""The model zoo: the architectures generalization studies use, each behind a validated config.

Every architecture is addressed by a name (:data:`ARCH_NAMES`) and a JSON-able config dict, and
is one record (:class:`~genscope.io.zoo.architecture.Architecture`: fields, checks, parameter
count, builder) in :mod:`genscope.io.zoo.catalogue`. Validation, counting and the catalogue are
torch-free; only :func:`build_model` imports torch.
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

from typing import TYPE_CHECKING, Any

from genscope.errors import BadArchitecture
from genscope.io.zoo.catalogue import ARCH_NAMES, ARCHITECTURES, lookup

if TYPE_CHECKING:
    from torch import nn

#: Largest parameter count a zoo config may have (estimated arithmetically before building).
MAX_PARAMS = 500_000_000

__all__ = [
    "ARCH_NAMES",
    "MAX_PARAMS",
    "build_model",
    "describe_architectures",
    "estimate_num_params",
    "validate_config",
]


def estimate_num_params(name: str, config: dict[str, Any] | None) -> int:
    """The exact number of parameters (``sum(p.numel() for p in model.parameters())``, buffers
    excluded) that :func:`build_model` would create, computed arithmetically.

    The config is validated (as :func:`validate_config`) except for the :data:`MAX_PARAMS` cap,
    so an over-large config still gets its count.

    Raises:
        BadArchitecture: unknown architecture or invalid config.
    """
    arch = lookup(name)
    return arch.count_params(arch.normalise(config))


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
    arch = lookup(name)
    cfg = arch.normalise(config)
    count = arch.count_params(cfg)
    if count > MAX_PARAMS:
        keys = arch.size_keys
        raise BadArchitecture(
            f"{arch.name}: this config has {count:,} parameters, above the cap of "
            f"{MAX_PARAMS:,}; reduce {' or '.join(repr(k) for k in keys)}",
            {
                "arch": arch.name,
                "key": keys[0],
                "keys": list(keys),
                "num_params": count,
                "max_params": MAX_PARAMS,
            },
        )
    return cfg


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Validate ``config`` (:func:`validate_config`), then build the model.

    Initialisation is deterministic given torch's global seed (``torch.manual_seed``). The model
    is returned in training mode, on the CPU, in float32.

    Raises:
        BadArchitecture: unknown architecture or invalid/absurd config (before any allocation).
    """
    cfg = validate_config(name, config)
    return lookup(name).build(cfg)


def describe_architectures() -> list[dict[str, Any]]:
    """Every architecture with its description and config fields, for a UI picker.

    Returns:
        ``[{"name", "description", "fields": [{"name", "type", "default", "help", "choices"?,
        "min"?, "max"?}]}]``, in :data:`ARCH_NAMES` order. A ``default`` of ``None`` means the
        default depends on other fields (said in ``help``).
    """
    return [arch.describe() for arch in ARCHITECTURES]
