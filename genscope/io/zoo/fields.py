"""Zoo config fields: a key's JSON type, default, help text and range; checking one value.

Torch-free: a config is checked on plain values before anything is allocated (see
:mod:`genscope.io.zoo`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from genscope.errors import BadArchitecture

#: Marks "no value given" in :func:`bad_config` (``None`` is a value).
MISSING: Any = object()

#: The JSON types a field may have.
FIELD_TYPES = ("int", "float", "bool", "str", "list[int]")


@dataclass(frozen=True)
class Field:
    """One config key: its JSON type, default, help text and allowed values."""

    name: str
    type: str  # one of FIELD_TYPES
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    max_len: int | None = None  # for list[int]
    exclusive_max: bool = False  # for floats such as dropout in [0, 1)

    def default_value(self) -> Any:
        """The default as a config holds it (a fresh list for ``list[int]``)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default

    def describe(self) -> dict[str, Any]:
        """The field for a UI picker: ``{"name", "type", "default", "help", "choices"?,
        "min"?, "max"?}``."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default_value(),
            "help": self.help,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out

    def coerce(self, arch: str, value: Any) -> Any:
        """Check one value against the field and return it normalised (JSON-able).

        Raises:
            BadArchitecture: wrong type, out of range or not one of the choices.
        """
        if self.type == "list[int]":
            return self._coerce_list(arch, value)
        out = self._coerce_scalar(arch, value)
        if self.choices is not None and out not in self.choices:
            allowed = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)
            raise bad_config(
                arch,
                self.name,
                f"{arch}: '{self.name}' must be one of {allowed}; got {_short(value)}",
                value,
            )
        if self.type in ("int", "float"):
            self._check_range(arch, out)
        return out

    def _type_error(self, arch: str, value: Any, expected: str) -> BadArchitecture:
        return bad_config(
            arch,
            self.name,
            f"{arch}: '{self.name}' must be {expected}; got {type(value).__name__} {_short(value)}",
            value,
        )

    def _coerce_scalar(self, arch: str, value: Any) -> Any:
        if self.type == "int":
            if not is_int(value):
                raise self._type_error(arch, value, "an integer")
            return int(value)
        if self.type == "float":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise self._type_error(arch, value, "a number")
            out = float(value)
            if not math.isfinite(out):
                raise bad_config(
                    arch, self.name, f"{arch}: '{self.name}' must be finite; got {out}", value
                )
            return out
        if self.type == "bool":
            if not isinstance(value, bool):
                raise self._type_error(arch, value, "true or false")
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise self._type_error(arch, value, "a string")
            return value.strip().lower()
        raise AssertionError(f"unknown field type {self.type}")  # pragma: no cover

    def _coerce_list(self, arch: str, value: Any) -> list[int]:
        if not isinstance(value, (list, tuple)):
            raise self._type_error(arch, value, "a list of integers")
        if self.max_len is not None and len(value) > self.max_len:
            raise bad_config(
                arch,
                self.name,
                f"{arch}: '{self.name}' may have at most {self.max_len} entries; got {len(value)}",
                len(value),
            )
        items: list[int] = []
        for i, item in enumerate(value):
            if not is_int(item):
                raise bad_config(
                    arch,
                    self.name,
                    f"{arch}: '{self.name}[{i}]' must be an integer; got {type(item).__name__} "
                    f"{_short(item)}",
                    item,
                )
            self._check_range(arch, item, what=f"'{self.name}[{i}]'")
            items.append(int(item))
        return items

    def _check_range(self, arch: str, value: float, what: str | None = None) -> None:
        label = what or f"'{self.name}'"
        if self.min is not None and value < self.min:
            raise bad_config(
                arch, self.name, f"{arch}: {label} must be >= {self.min}; got {value}", value
            )
        if self.max is not None:
            if self.exclusive_max and value >= self.max:
                raise bad_config(
                    arch, self.name, f"{arch}: {label} must be < {self.max}; got {value}", value
                )
            if value > self.max:
                raise bad_config(
                    arch, self.name, f"{arch}: {label} must be <= {self.max}; got {value}", value
                )


def bad_config(arch: str, key: str | None, message: str, value: Any = MISSING) -> BadArchitecture:
    """The error for a bad config, with ``detail = {"arch", "key"?, "value"?}`` (JSON-able)."""
    detail: dict[str, Any] = {"arch": arch}
    if key is not None:
        detail["key"] = key
    if value is not MISSING:
        plain = isinstance(value, (int, str, bool)) or (
            isinstance(value, float) and math.isfinite(value)
        )
        detail["value"] = value if plain else repr(value)
    return BadArchitecture(message, detail)


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``true`` is not an integer in a config)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- fields most architectures share ----------------------------------------------------------

#: Help of ``input_size`` for architectures with global pooling.
ANY_SIZE = "Adaptive pooling: any size >= 1 works (8 for digits); used for validation only."


def num_classes_field() -> Field:
    """``num_classes``: the number of logits."""
    return Field("num_classes", "int", 10, "Number of output classes (logits).", min=1, max=100_000)


def in_channels_field() -> Field:
    """``in_channels``: image channels of the input."""
    return Field(
        "in_channels",
        "int",
        3,
        "Input image channels (3 for CIFAR, 1 for digits/MNIST).",
        min=1,
        max=1024,
    )


def input_size_field(minimum: int, note: str) -> Field:
    """``input_size``: height = width of the input images, at least ``minimum``."""
    return Field(
        "input_size",
        "int",
        32,
        f"Input height = width in pixels. {note}",
        min=minimum,
        max=4096,
    )


def dropout_field(where: str) -> Field:
    """``dropout``: a probability in [0, 1), applied ``where``."""
    return Field(
        "dropout",
        "float",
        0.0,
        f"Dropout probability in [0, 1) {where}.",
        min=0.0,
        max=1.0,
        exclusive_max=True,
    )
