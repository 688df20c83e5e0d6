"""The zoo's architectures, in the order the catalogue shows them, and lookup by name.

Adding an architecture: a module in :mod:`genscope.io.zoo.archs` defining its record (fields,
checks, parameter count, builder), one line here, and its tests.
"""

from __future__ import annotations

from typing import Any

from genscope.errors import BadArchitecture
from genscope.io.zoo.architecture import Architecture
from genscope.io.zoo.archs import lenet, mlp, nin, preact_resnet18, resnet, vgg, wide_resnet
from genscope.io.zoo.fields import bad_config

ARCHITECTURES: tuple[Architecture, ...] = (
    mlp.ARCHITECTURE,
    lenet.ARCHITECTURE,
    vgg.ARCHITECTURE,
    resnet.ARCHITECTURE,
    preact_resnet18.ARCHITECTURE,
    wide_resnet.ARCHITECTURE,
    nin.ARCHITECTURE,
)

ARCH_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES)

_BY_NAME: dict[str, Architecture] = {a.name: a for a in ARCHITECTURES}


def lookup(name: Any) -> Architecture:
    """The record of an architecture, by name (case-insensitive, surrounding blanks ignored).

    Raises:
        BadArchitecture: not a string, or no such architecture (``detail["known"]`` lists them).
    """
    if not isinstance(name, str):
        raise bad_config(
            str(name),
            None,
            f"architecture name must be a string; got {type(name).__name__}",
            name,
        )
    key = name.strip().lower()
    arch = _BY_NAME.get(key)
    if arch is None:
        hint = ""
        if key.startswith("resnet") and key[6:].isdigit():
            hint = f" (use 'resnet' with {{\"depth\": {key[6:]}}})"
        raise BadArchitecture(
            f"unknown architecture {name!r}{hint}; known: {', '.join(ARCH_NAMES)}",
            {"arch": name, "known": list(ARCH_NAMES)},
        )
    return arch
