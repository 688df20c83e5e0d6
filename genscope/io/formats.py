"""The checkpoint formats GenScope recognises: one record per format, in one registry.

A record (:class:`CheckpointFormat`) says everything about a format: its name (the ``format`` of
a loaded model and of reports), the file suffixes users know it by, how its bytes are
recognised, the form its models take (``program``, ``state_dict``, ``module``), whether it
needs a zoo architecture (``--arch``), its loader, and its user-facing description. Detection
(:func:`detect`) and loading (:func:`genscope.io.checkpoints.load_checkpoint`) iterate over
the registry; the CLI's help, the API's upload description and the docs' list are generated
from it (:func:`suffix_summary`, :func:`describe_formats`, :func:`formats_markdown`).

A format is recognised by content, never by name alone, in registry order (the first whose
``detect`` accepts the file wins): every zip archive first passes
:func:`genscope.io.archives.check_zip` and the refusal of compiled code, so no detector ever sees
a hostile archive's members unchecked.

Adding a format: a record here (or :func:`register_format` from a plugin or a test), its loader
(a function ``path -> Contents``), and its tests. This module is torch-free; loaders named as
``"module:function"`` are imported only when a file of their format is loaded.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genscope.errors import BadCheckpoint, UnsafeCheckpoint
from genscope.io.archives import ArchiveError, Member, check_zip

FORMAT_EXPORT = "torch.export"
FORMAT_STATE_DICT = "state_dict"
FORMAT_SAFETENSORS = "safetensors"
FORMAT_TORCHSCRIPT = "torchscript"

#: The forms a model can arrive in, as measures declare them (``registry.FORMS``).
FORMS = ("module", "state_dict", "program")

#: How a user can turn any model into a format GenScope loads (appended to refusals).
EXPORT_HINT = (
    "Save the weights instead (torch.save(model.state_dict(), 'w.pt') or safetensors) and pass "
    "--arch, or export the model: torch.export.save(torch.export.export(model.eval(), (x,)), "
    "'model.pt2')."
)

#: Bytes read from the start of a file for detection.
HEAD_BYTES = 16

_NATIVE_CODE = re.compile(r"(^|/)data/aotinductor/|\.(so|dll|dylib|pyd)$")
_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle"})


@dataclass(frozen=True)
class Probe:
    """What detection knows of a file: its start, its size and, for a zip archive, its checked
    members' names below the archive's top folder (``None`` for any other file)."""

    path: Path
    head: bytes
    size: int
    members: frozenset[str] | None


@dataclass
class Contents:
    """What a format's loader read: a module (formats that need no architecture) or tensors
    (formats that do, with notes on what unwrapping did)."""

    module: Any = None
    tensors: Mapping[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    static_batch_size: int | None = None


Loader = Callable[[Path], Contents]


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint format.

    Attributes:
        name: the ``format`` of loaded models and reports (``LoadedModel.format``).
        title: what users call it (``"torch.export program"``).
        suffixes: the file suffixes it is saved with, most usual first (listings, ``accept``).
        noun: the format in a sentence (``"a .safetensors file"``), for "expected ..." errors.
        description: one line for users: what it holds and how it is loaded.
        form: the form of the models it yields (one of :data:`FORMS`).
        detect: whether a file is of this format, from its :class:`Probe` (no code run, nothing
            decompressed).
        loader: reads a file of this format (a function, or ``"module:function"`` imported when
            needed); ``None`` for refused formats.
        needs_arch: whether the file holds weights only, so a zoo architecture is needed.
        in_zip: whether files of this format may be zip archives.
        refusal: when set, files of this format are recognised and refused with this message
            (``{name}`` is the file name), as :class:`~genscope.errors.UnsafeCheckpoint`.
        functional: whether its modules work with ``torch.func.functional_call``.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    noun: str
    description: str
    form: str
    detect: Callable[[Probe], bool]
    loader: Loader | str | None = None
    needs_arch: bool = False
    in_zip: bool = False
    refusal: str | None = None
    functional: bool = True

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"format {self.name!r}: form must be one of {FORMS}")
        if not self.suffixes or not all(
            s.startswith(".") and s == s.lower() for s in self.suffixes
        ):
            raise ValueError(
                f"format {self.name!r}: suffixes must be lower case and start with '.'"
            )
        if (self.loader is None) == (self.refusal is None):
            raise ValueError(f"format {self.name!r}: give either a loader or a refusal")

    @property
    def accepted(self) -> bool:
        """Whether files of this format are loaded (not refused)."""
        return self.refusal is None

    def load(self, path: Path) -> Contents:
        """Read ``path`` with the format's loader (imported on first use when named)."""
        loader = self.loader
        if isinstance(loader, str):
            module, _, attr = loader.partition(":")
            loader = getattr(importlib.import_module(module), attr)
        if loader is None:  # pragma: no cover - refused formats never reach a loader
            raise AssertionError(f"format {self.name!r} has no loader")
        return loader(path)

    def describe(self) -> dict[str, Any]:
        """The record as JSON: ``{"name", "title", "suffixes", "form", "needs_arch",
        "accepted", "description"}``."""
        return {
            "name": self.name,
            "title": self.title,
            "suffixes": list(self.suffixes),
            "form": self.form,
            "needs_arch": self.needs_arch,
            "accepted": self.accepted,
            "description": self.description,
        }


# --- detection of the built-in formats ---------------------------------------------------------


def _is_export_archive(probe: Probe) -> bool:
    """A ``torch.export.save`` archive: its format marker, program JSON or ``models/*.json``."""
    members = probe.members
    return members is not None and (
        "archive_format" in members
        or "serialized_exported_program.json" in members
        or any(m.startswith("models/") and m.endswith(".json") for m in members)
    )


def _is_torchscript_archive(probe: Probe) -> bool:
    """A ``torch.jit.save`` archive: constants and compiled code (``code/``)."""
    members = probe.members
    return (
        members is not None
        and "constants.pkl" in members
        and any(m.startswith("code/") for m in members)
    )


def _is_safetensors(probe: Probe) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    if probe.members is not None or len(probe.head) < 9:
        return False
    header_len = int.from_bytes(probe.head[:8], "little")
    return probe.head[8:9] == b"{" and 0 < header_len <= probe.size


def _is_torch_save(probe: Probe) -> bool:
    """A ``torch.save`` zip archive (``data.pkl``), or a legacy pickle (protocol 2+ opcode)."""
    if probe.members is not None:
        return "data.pkl" in probe.members
    return probe.head[:1] == b"\x80" or probe.path.suffix in _PICKLE_SUFFIXES


TORCHSCRIPT_REFUSED = (
    "{name} is a TorchScript archive: a program whose code runs while it loads, so GenScope "
    "does not load it. Export the model instead: "
    "torch.export.save(torch.export.export(model.eval(), (example_input,)), 'model.pt2'), or "
    "save its weights (safetensors, or torch.save(model.state_dict(), 'w.pt')) and pass --arch."
)

_BUILT_IN = (
    CheckpointFormat(
        name=FORMAT_EXPORT,
        title="torch.export program",
        suffixes=(".pt2",),
        noun="a torch.export .pt2 archive",
        description="A program saved with torch.export.save, loaded with no Python code from "
        "the file run; every operator must be a pure tensor operator on the allow-list.",
        form="program",
        detect=_is_export_archive,
        loader="genscope.io.checkpoints:read_export_program",
        in_zip=True,
    ),
    CheckpointFormat(
        name=FORMAT_TORCHSCRIPT,
        title="TorchScript",
        suffixes=(".pt",),
        noun="a TorchScript archive",
        description="An archive written by torch.jit.save: recognised and refused, since its "
        "code runs while it loads; export the model or save its weights instead.",
        form="module",
        detect=_is_torchscript_archive,
        in_zip=True,
        refusal=TORCHSCRIPT_REFUSED,
        functional=False,
    ),
    CheckpointFormat(
        name=FORMAT_SAFETENSORS,
        title="safetensors weights",
        suffixes=(".safetensors",),
        noun="a .safetensors file",
        description="Weights in the safetensors format, loaded into the zoo architecture named "
        "with --arch (and --arch-config).",
        form="state_dict",
        detect=_is_safetensors,
        loader="genscope.io.checkpoints:read_safetensors",
        needs_arch=True,
    ),
    CheckpointFormat(
        name=FORMAT_STATE_DICT,
        title="torch.save state dict",
        suffixes=(".pt", ".pth", ".bin"),
        noun="a torch.save state dict",
        description="A state dict saved with torch.save (training checkpoints are unwrapped), "
        "read by the weights-only unpickler into the zoo architecture named with --arch.",
        form="state_dict",
        detect=_is_torch_save,
        loader="genscope.io.checkpoints:read_torch_save",
        needs_arch=True,
        in_zip=True,
    ),
)

_REGISTRY: list[CheckpointFormat] = list(_BUILT_IN)


# --- the registry ------------------------------------------------------------------------------


def register_format(fmt: CheckpointFormat, *, before: str | None = None) -> CheckpointFormat:
    """Add a format, last in detection order or just before the format named ``before``.

    Raises:
        ValueError: a format of that name is registered already, or ``before`` is unknown.
    """
    if any(f.name == fmt.name for f in _REGISTRY):
        raise ValueError(f"a checkpoint format named {fmt.name!r} is registered already")
    if before is None:
        _REGISTRY.append(fmt)
    else:
        _REGISTRY.insert(_REGISTRY.index(_named(before)), fmt)
    return fmt


def unregister_format(name: str) -> CheckpointFormat:
    """Remove a format and return its record.

    Raises:
        ValueError: no format of that name is registered.
    """
    fmt = _named(name)
    _REGISTRY.remove(fmt)
    return fmt


def _named(name: str) -> CheckpointFormat:
    fmt = format_named(name)
    if fmt is None:
        raise ValueError(f"no checkpoint format named {name!r}")
    return fmt


def checkpoint_formats() -> tuple[CheckpointFormat, ...]:
    """Every registered format, in detection order (refused ones included)."""
    return tuple(_REGISTRY)


def accepted_formats() -> tuple[CheckpointFormat, ...]:
    """The formats whose files are loaded, in detection order."""
    return tuple(f for f in _REGISTRY if f.accepted)


def format_named(name: str) -> CheckpointFormat | None:
    """The registered format called ``name``, or ``None``."""
    return next((f for f in _REGISTRY if f.name == name), None)


def accepted_suffixes() -> tuple[str, ...]:
    """Every suffix of an accepted format, once each (for a file picker's ``accept``).

    >>> accepted_suffixes()
    ('.pt2', '.safetensors', '.pt', '.pth', '.bin')
    """
    out: list[str] = []
    for fmt in accepted_formats():
        out += [s for s in fmt.suffixes if s not in out]
    return tuple(out)


def suffix_summary() -> str:
    """The accepted formats by their suffixes, for help texts.

    >>> suffix_summary()
    '.pt2, .safetensors, .pt/.pth/.bin'
    """
    return ", ".join("/".join(fmt.suffixes) for fmt in accepted_formats())


def describe_formats() -> list[dict[str, Any]]:
    """Every format as JSON (:meth:`CheckpointFormat.describe`), in detection order."""
    return [fmt.describe() for fmt in _REGISTRY]


def formats_markdown() -> str:
    """The formats as the Markdown table of ``docs/formats.md`` (which a test keeps equal)."""
    rows = [
        "| format | suffixes | needs `--arch` | form | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fmt in _REGISTRY:
        suffixes = ", ".join(f"`{s}`" for s in fmt.suffixes)
        rows.append(
            f"| {fmt.title} (`{fmt.name}`) | {suffixes} | {'yes' if fmt.needs_arch else 'no'} "
            f"| `{fmt.form}` | {fmt.description} |"
        )
    return "\n".join(rows) + "\n"


# --- detection ---------------------------------------------------------------------------------


def _join_or(nouns: list[str]) -> str:
    return nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} or {nouns[-1]}"


def detect(path: str | Path) -> CheckpointFormat:
    """Recognise a file's format from its bytes, trying the registered formats in order.

    Raises:
        BadCheckpoint: empty, unreadable, truncated, or of no known format.
        UnsafeCheckpoint: a hostile archive (zip bomb, member names that escape a folder,
            encrypted members, compiled code); see :func:`genscope.io.archives.check_zip`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        raise BadCheckpoint(f"{path.name}: the file is empty")
    members: frozenset[str] | None = None
    if head[:4] == b"PK\x03\x04":
        members = frozenset(m.name.split("/", 1)[-1] for m in _check_archive(path))
    probe = Probe(path, head, path.stat().st_size, members)
    for fmt in _REGISTRY:
        if fmt.detect(probe):
            return fmt
    if members is not None:
        nouns = [f.noun for f in _REGISTRY if f.in_zip]
        raise BadCheckpoint(f"{path.name}: a zip archive, but not {_join_or(nouns)}")
    raise BadCheckpoint(
        f"{path.name}: not a checkpoint GenScope can read (expected "
        f"{_join_or([f.noun for f in _REGISTRY])})"
    )


def _check_archive(path: Path) -> list[Member]:
    """The archive's members after :func:`~genscope.io.archives.check_zip`; also refuses
    members that hold native code (AOTInductor packages), which torch would load and run."""
    try:
        members = check_zip(path)
    except ArchiveError as exc:
        raise (UnsafeCheckpoint if exc.unsafe else BadCheckpoint)(str(exc)) from None
    native = [m.name for m in members if _NATIVE_CODE.search(m.name)]
    if native:
        raise UnsafeCheckpoint(
            f"{path.name}: the archive holds compiled code ({native[0]}), which loading would "
            f"run; only portable programs are accepted. {EXPORT_HINT}",
            {"members": native[:20]},
        )
    return members
