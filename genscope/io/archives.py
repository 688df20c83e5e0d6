"""Zip archives and pickles seen before any loader touches them.

Checkpoints (torch.save, torch.export) and ``.npz`` datasets are zip archives whose
members torch's and numpy's readers decompress into memory sized by what the archive *declares*.
:func:`check_zip` reads only the central directory and refuses, before anything is
decompressed:

* member names that could escape a folder if anyone extracted them (``..``, absolute paths,
  drive letters, backslashes, NUL bytes), duplicate names (two readers could pick different
  members), and more than :data:`MAX_MEMBERS` members;
* encrypted members and compression methods other than stored/deflate;
* zip bombs: a sum of declared sizes above the unpacked limit (:func:`max_unpacked_bytes`,
  ``GENSCOPE_MAX_UNPACKED_MB``), or a member whose declared size is more than
  :data:`MAX_RATIO` times its compressed size (deflate of real weights or data never is).

Readers built on Python's :mod:`zipfile` never read past a member's declared size, and
:func:`read_member` reads at most a given cap, so a member that lies about its size cannot
inflate beyond the checked limits either.

:func:`scan_pickle` walks a pickle's opcodes without executing any of them, simulating the
pickle machine's stack and memo, and returns the globals it would import that are outside an
allow-list (:func:`weights_global`: torch's weights-only list): a pickle can only run code
through the callables it imports (``GLOBAL``/``STACK_GLOBAL``/``INST``/extension codes), so
refusing unknown imports refuses every payload.
"""

from __future__ import annotations

import os
import pickletools
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Default limit on the sum of declared uncompressed member sizes: 4 x the default upload limit.
DEFAULT_MAX_UNPACKED_MB = 4 * 2048
#: A member larger than :data:`RATIO_FLOOR` may expand at most this many times.
MAX_RATIO = 500
#: Members below this size are never refused for their ratio (tiny JSON/config members).
RATIO_FLOOR = 16 << 20
#: At most this many members per archive.
MAX_MEMBERS = 100_000
#: Compression methods the readers support: stored and deflate.
ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(Exception):
    """The archive is unsafe or corrupt; ``unsafe`` tells which (the callers pick the code)."""

    def __init__(self, message: str, unsafe: bool = False) -> None:
        super().__init__(message)
        self.unsafe = unsafe


def max_unpacked_bytes(limit_mb: float | None = None) -> int:
    """The unpacked-size limit in bytes: ``limit_mb``, else ``GENSCOPE_MAX_UNPACKED_MB``, else
    :data:`DEFAULT_MAX_UNPACKED_MB`."""
    if limit_mb is None:
        raw = os.environ.get("GENSCOPE_MAX_UNPACKED_MB", "").strip()
        try:
            limit_mb = float(raw) if raw else DEFAULT_MAX_UNPACKED_MB
        except ValueError:
            limit_mb = DEFAULT_MAX_UNPACKED_MB
        if not limit_mb > 0:
            limit_mb = DEFAULT_MAX_UNPACKED_MB
    return int(limit_mb * 1024 * 1024)


@dataclass(frozen=True)
class Member:
    """One checked archive member."""

    name: str
    size: int  # declared uncompressed size
    compressed: int


def unsafe_name(name: str) -> str | None:
    """Why a member name could escape an extraction folder, or None when it cannot."""
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "has a '..' component"
    return None


def check_zip(
    path: str | os.PathLike[str] | IO[bytes],
    max_unpacked: int | None = None,
    name: str | None = None,
) -> list[Member]:
    """Check an archive's central directory (nothing is decompressed); return its members.

    ``path`` may be an open binary file (an archive inside an archive); ``name`` labels it in
    messages.

    Raises:
        ArchiveError: corrupt (``unsafe=False``) or hostile (``unsafe=True``: traversal names,
            zip bombs, encryption, odd compression).
    """
    limit = max_unpacked_bytes() if max_unpacked is None else max_unpacked
    if name is None:
        name = Path(path).name if isinstance(path, (str, os.PathLike)) else "archive"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{name}: truncated or corrupt archive ({_one_line(exc)})") from None
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(
            f"{name}: the archive has {len(infos)} members, more than {MAX_MEMBERS}", True
        )
    seen: set[str] = set()
    members: list[Member] = []
    total = 0
    for info in infos:
        raw = info.orig_filename
        why = unsafe_name(raw)
        if why is not None:
            raise ArchiveError(
                f"{name}: archive member {raw!r} {why}, which could escape a folder; refused", True
            )
        if raw in seen:
            raise ArchiveError(f"{name}: archive member {raw!r} appears twice; refused", True)
        seen.add(raw)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name}: archive member {raw!r} is encrypted; refused", True)
        if info.compress_type not in ALLOWED_METHODS:
            raise ArchiveError(
                f"{name}: archive member {raw!r} uses compression method {info.compress_type} "
                "(only stored and deflate are read); refused",
                True,
            )
        size, packed = int(info.file_size), int(info.compress_size)
        if size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
            raise ArchiveError(
                f"{name}: archive member {raw!r} declares {size} bytes from {packed} compressed "
                f"(ratio above {MAX_RATIO}: a zip bomb?); refused",
                True,
            )
        total += size
        if total > limit:
            raise ArchiveError(
                f"{name}: the archive declares more than {_mb(limit)} uncompressed "
                f"(limit GENSCOPE_MAX_UNPACKED_MB; a zip bomb?); refused",
                True,
            )
        members.append(Member(raw, size, packed))
    return members


def read_member(zf: zipfile.ZipFile, member: str, cap: int) -> bytes:
    """A member's bytes, refusing members that declare or yield more than ``cap`` bytes."""
    info = zf.getinfo(member)
    if info.file_size > cap:
        raise ArchiveError(f"archive member {member!r} is larger than {cap} bytes", True)
    with zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ArchiveError(f"archive member {member!r} is larger than {cap} bytes", True)
    return data


# --- pickles ------------------------------------------------------------------------------------

Allowed = Callable[[str, str], bool]
_IMPORTS = {"GLOBAL", "INST"}
_EXTENSIONS = {"EXT1", "EXT2", "EXT4"}
_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}


class _Text(str):
    """A string the pickle pushed (a candidate module or attribute name)."""


_OPAQUE = object()  # any other stack item
_MARK = object()
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def _pop(stack: list[object], opcode: pickletools.OpcodeInfo) -> None:
    """Pop what ``opcode`` consumes (pickletools' stack effect: items, or up to a mark)."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        above = before.index(pickletools.markobject)
        while stack and stack[-1] is not _MARK:
            stack.pop()
        if not stack:
            raise ValueError(f"{opcode.name} without a mark")
        stack.pop()  # the mark
        for _ in range(above):
            stack.pop()
    else:
        for _ in range(len(before)):
            stack.pop()


def scan_pickle(data: bytes, allowed: Allowed) -> list[str]:
    """The ``module.name`` globals a pickle would import that ``allowed`` refuses.

    Nothing is unpickled: :func:`pickletools.genops` only decodes opcodes, and the pickle
    machine's stack and memo are simulated with opaque items, so that ``STACK_GLOBAL`` is judged
    by the two items it really pops, whether pushed as strings just before, fetched from the
    memo (``GET``/``BINGET``/``LONG_BINGET`` after ``PUT``/``MEMOIZE``) or duplicated. An
    import whose module or name is not a string the pickle pushed is reported (``STACK_GLOBAL
    ?``), as are extension codes; the callers refuse any finding.

    Raises:
        ArchiveError: the bytes are not a well-formed pickle (including a stack underflow).
    """
    found: list[str] = []
    stack: list[object] = []
    memo: dict[object, object] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            op = opcode.name
            if op in _STRING_OPS:
                stack.append(_Text(arg))
            elif op == "MARK":
                stack.append(_MARK)
            elif op in _MEMO_PUT:
                memo[arg] = stack[-1]
            elif op == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif op in _MEMO_GET:
                stack.append(memo[arg])
            elif op == "DUP":
                stack.append(stack[-1])
            elif op == "STACK_GLOBAL":
                name, module = stack.pop(), stack.pop()
                if not (isinstance(module, _Text) and isinstance(name, _Text)):
                    found.append("STACK_GLOBAL ?")
                elif not allowed(module, name):
                    found.append(f"STACK_GLOBAL {module}.{name}")
                stack.append(_OPAQUE)
            else:
                if op in _IMPORTS:
                    module, _, attr = str(arg).partition(" ")
                    if not allowed(module, attr):
                        found.append(f"{module}.{attr}")
                elif op in _EXTENSIONS:
                    found.append(f"{op} {arg}")
                _pop(stack, opcode)
                stack.extend(_OPAQUE for _ in opcode.stack_after)
    except Exception as exc:  # pickletools raises ValueError and others on garbage
        raise ArchiveError(f"corrupt pickle ({_one_line(exc)})") from None
    return found


def weights_global(module: str, name: str) -> bool:
    """The globals torch's weights-only unpickler accepts (its built-in allow-list and the
    globals registered with ``torch.serialization.add_safe_globals``)."""
    import torch

    qualified = f"{module}.{name}"
    if qualified in torch._weights_only_unpickler._get_allowed_globals():
        return True
    return any(
        f"{getattr(g, '__module__', '')}.{getattr(g, '__qualname__', '')}" == qualified
        for g in torch.serialization.get_safe_globals()
        if not isinstance(g, tuple)
    )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), at most 200 characters."""
    return _one_line(exc)
