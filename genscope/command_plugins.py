"""Commands that other packages add to ``genscope``, found through entry points.

The engine names none of them. An entry point of the group ``genscope.commands`` (PyPA entry
points specification), ``NAME = "module:object [extra]"``, adds ``object`` as ``genscope NAME``:
a command function (a typer command's signature and docstring) or a ``typer.Typer`` group. The
service declares its commands this way in ``pyproject.toml``.

When the distributions its extra requires are not installed, or its module cannot be imported,
``genscope NAME`` is still listed: it answers with one line naming what is missing and the
``pip install 'genscope[extra]'`` that provides it, and exits with status 2.

:class:`PluginGroup` loads a plugin only when its command is asked for (run, or listed by
``--help``): ``genscope analyze`` and importing the engine load nothing of the service.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import click
import typer
from typer.core import TyperGroup

from genscope.console import fail

GROUP = "genscope.commands"
DISTRIBUTION = "genscope"

# PEP 508 requirement: a name, optional [extras], a version spec, optional "; marker".
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?[^;]*(?:;(?P<marker>.*))?$"
)
_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


@dataclass(frozen=True)
class Unavailable:
    """A plugin command that cannot run here, and why."""

    name: str
    reason: str
    install: str

    @property
    def message(self) -> str:
        """The one line ``genscope NAME`` answers with."""
        return f"genscope {self.name} is not available here ({self.reason}); {self.install}"


def _install_hint(extras: Iterable[str]) -> str:
    names = ",".join(extras)
    return f"install it with: pip install '{DISTRIBUTION}[{names}]'" if names else "reinstall it"


def required_distributions(extra: str, distribution: str = DISTRIBUTION) -> list[str]:
    """The distributions that ``distribution[extra]`` requires, following its own extras.

    Only the ``extra == "..."`` clause of a requirement's marker is read (the project's extras
    carry no other clause); an unknown distribution requires nothing.
    """
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    found: list[str] = []
    for line in requires:
        match = _REQUIREMENT.match(line)
        if match is None or extra not in _EXTRA_MARKER.findall(match["marker"] or ""):
            continue
        name = match["name"]
        if name.lower() == distribution.lower():
            inner = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
            for sub in inner:
                found.extend(n for n in required_distributions(sub, distribution) if n not in found)
        elif name not in found:
            found.append(name)
    return found


def missing_distributions(extra: str, distribution: str = DISTRIBUTION) -> list[str]:
    """The distributions ``distribution[extra]`` requires that are not installed."""
    missing = []
    for name in required_distributions(extra, distribution):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _stand_in(unavailable: Unavailable) -> Callable[..., None]:
    def command() -> None:  # its arguments, whatever they are, are left unread
        fail("not_installed", unavailable.message, 2)

    command.__doc__ = f"Not available here: {unavailable.install}."
    return command


def _add(app: typer.Typer, name: str, obj: Any) -> None:
    if isinstance(obj, typer.Typer):
        app.add_typer(obj, name=name)
    elif callable(obj):
        app.command(name=name)(obj)
    else:
        raise TypeError(f"entry point {GROUP}:{name} is neither a command nor a typer.Typer")


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {e.name: e for e in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)}


def _load(entry: metadata.EntryPoint) -> tuple[Any, Unavailable | None]:
    """The entry point's object, or None and why it cannot run here."""
    missing = sorted({m for extra in entry.extras for m in missing_distributions(extra)})
    reason = f"missing {', '.join(missing)}" if missing else ""
    if not missing:
        try:
            return entry.load(), None
        except ImportError as exc:
            reason = f"{entry.module} cannot be imported: {exc}"
    return None, Unavailable(entry.name, reason, _install_hint(entry.extras))


def _add_stand_in(app: typer.Typer, unavailable: Unavailable) -> None:
    app.command(
        name=unavailable.name,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_stand_in(unavailable))


def unavailable_command(name: str) -> Unavailable | None:
    """Why the plugin command ``name`` cannot run here; None when it can (or is no plugin)."""
    entry = _entry_points().get(name)
    return None if entry is None else _load(entry)[1]


class PluginGroup(TyperGroup):
    """A typer group that adds the ``genscope.commands`` entry points on demand: listed by
    name after the group's own commands, each loaded when it is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + [name for name in _entry_points() if name not in own]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        entry = _entry_points().get(cmd_name)
        if entry is None:
            return None
        obj, unavailable = _load(entry)
        holder = typer.Typer()
        holder.callback()(lambda: None)  # a group, so that the command keeps its own name
        if unavailable is not None:
            _add_stand_in(holder, unavailable)
        else:
            _add(holder, cmd_name, obj)
        command = typer.main.get_group(holder).get_command(ctx, cmd_name)
        if command is not None:
            self.add_command(command, cmd_name)  # loaded once per process
        return command


def add_plugin_commands(app: typer.Typer) -> dict[str, Unavailable]:
    """Add every ``genscope.commands`` entry point to ``app``; returns those that cannot run.

    A name that ``app`` already has (an engine command) is never replaced.
    """
    taken = {info.name for info in app.registered_commands if info.name}
    taken |= {info.name for info in app.registered_groups if info.name}
    unavailable: dict[str, Unavailable] = {}
    for entry in _entry_points().values():
        if entry.name in taken:
            continue
        taken.add(entry.name)
        obj, stand_in = _load(entry)
        if stand_in is not None:
            unavailable[entry.name] = stand_in
            _add_stand_in(app, stand_in)
            continue
        _add(app, entry.name, obj)
    return unavailable
