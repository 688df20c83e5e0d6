"""One zoo architecture as a record: its config fields, checks, parameter count and builder.

A record is all the zoo knows of an architecture; :mod:`genscope.io.zoo.catalogue` lists them.
Everything but :attr:`Architecture.build` works on plain dicts and is torch-free; builders import
their network classes when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genscope.io.zoo.fields import Field, bad_config

if TYPE_CHECKING:
    from torch import nn

Config = dict[str, Any]


def no_cross_check(cfg: Config) -> None:
    """For architectures whose keys are independent of each other."""


@dataclass(frozen=True)
class Architecture:
    """A zoo architecture.

    Attributes:
        name: the lower-case name users give (``--arch``).
        description: one or two sentences with the reference, for the catalogue.
        fields: the config keys, in the order configs list them.
        count_params: the exact parameter count of the built model, from a full config, by
            arithmetic (must equal ``sum(p.numel() for p in model.parameters())``).
        build: the model from a full, validated config.
        size_keys: the keys that drive the parameter count, named when a config is over the cap.
        cross_check: checks between keys of a full config; may fill in defaults that depend on
            other keys (raises :class:`~genscope.errors.BadArchitecture`).
    """

    name: str
    description: str
    fields: tuple[Field, ...]
    count_params: Callable[[Config], int]
    build: Callable[[Config], nn.Module]
    size_keys: tuple[str, ...]
    cross_check: Callable[[Config], None] = no_cross_check

    def normalise(self, config: Any) -> Config:
        """Validate everything except the parameter cap; return the full config.

        Raises:
            BadArchitecture: not a dict, an unknown key, a bad value, or keys that disagree.
        """
        arch = self.name
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise bad_config(
                arch,
                None,
                f"{arch}: the config must be a JSON object (dict); got {type(config).__name__}",
            )
        names = [f.name for f in self.fields]
        unknown = [k for k in config if k not in names]
        if unknown:
            raise bad_config(
                arch,
                str(unknown[0]),
                f"{arch}: unknown config key {', '.join(repr(k) for k in unknown)}; "
                f"allowed: {', '.join(names)}",
            )
        out: Config = {}
        for f in self.fields:
            value = config.get(f.name)
            out[f.name] = f.default_value() if value is None else f.coerce(arch, value)
        self.cross_check(out)
        return out

    def describe(self) -> dict[str, Any]:
        """``{"name", "description", "fields": [...]}`` for a UI picker."""
        return {
            "name": self.name,
            "description": self.description,
            "fields": [f.describe() for f in self.fields],
        }
