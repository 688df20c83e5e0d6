"""Keep freed memory in the process while curvature products run (glibc's malloc, CPU).

Every Hessian-vector product frees and re-allocates the same activations, a few hundred MiB
for a CIFAR ResNet on 512 examples. By default glibc gives freed space at the top of the heap
back to the kernel once it exceeds ``M_TRIM_THRESHOLD`` (at most 64 MiB under its dynamic rule)
and serves blocks above ``M_MMAP_THRESHOLD`` with fresh ``mmap`` calls, so each product faults
its working set back in, page by page: measured on a 2-core CPU, about 100 000 minor page
faults and a quarter of the product's time for the ResNet-8 of ``bench/curvature.py``
(0.75 s → 0.56 s per product with them gone). The mallopt parameters are those of the glibc
manual (``man 3 mallopt``).

While a computation holds :func:`retained_heap`, blocks up to 32 MiB (the largest mmap threshold
glibc accepts on 64-bit systems) come from the heap and nothing is trimmed. On the last exit the
trim threshold and top pad go back to what glibc's dynamic rule gives for that mmap threshold
and ``malloc_trim(0)`` returns the free memory, so the process's resident size falls back
afterwards. The mmap threshold stays at 32 MiB: the value glibc itself reaches once a program
has freed a block that large.

Elsewhere (another C library, or ``GENSCOPE_RETAIN_HEAP=0``) the context does nothing. CUDA
memory has its own caching allocator and needs none of this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")

SWITCH_ENV = "GENSCOPE_RETAIN_HEAP"

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: The largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 1024**2
#: Held while retained: never trim (the largest int mallopt takes).
_NO_TRIM = 2**31 - 1
#: Extra space requested from the kernel whenever the heap grows, while retained.
_TOP_PAD_HELD = 64 * 1024**2
#: After the last exit: glibc's dynamic trim threshold for ``MMAP_THRESHOLD`` (twice it) and
#: its default top pad.
_TRIM_AFTER = 2 * MMAP_THRESHOLD
_TOP_PAD_AFTER = 128 * 1024

_lock = threading.Lock()
_depth = 0
_libc: ctypes.CDLL | None = None
_libc_loaded = False


def _glibc() -> ctypes.CDLL | None:
    """glibc's handle, or None on another C library or platform."""
    global _libc, _libc_loaded
    if not _libc_loaded:
        _libc_loaded = True
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                    _libc = libc
            except OSError:
                _libc = None
    return _libc


def enabled() -> bool:
    """Whether :func:`retained_heap` changes anything in this process.

    Raises:
        ValueError: ``GENSCOPE_RETAIN_HEAP`` is set to something other than 0 or 1.
    """
    raw = os.environ.get(SWITCH_ENV, "1").strip() or "1"
    if raw not in ("0", "1"):
        raise ValueError(f"{SWITCH_ENV} must be 0 or 1, got {raw!r}")
    return raw == "1" and _glibc() is not None


@contextmanager
def retained_heap(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Keep freed CPU memory in the process for the duration of the block (nests).

    Yields whether the policy is in force (False for CUDA devices, other C libraries, or when
    ``GENSCOPE_RETAIN_HEAP=0``).
    """
    global _depth
    if torch.device(device).type != "cpu" or not enabled():
        yield False
        return
    libc = _glibc()
    assert libc is not None
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
            libc.mallopt(_M_TOP_PAD, _TOP_PAD_HELD)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                libc.mallopt(_M_TOP_PAD, _TOP_PAD_AFTER)
                libc.malloc_trim(0)


def holding() -> bool:
    """Whether some computation in this process holds :func:`retained_heap` now."""
    return _depth > 0


def holds_heap(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn(op, ...)`` under :func:`retained_heap` for the device of its operator ``op``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        op: Any = args[0] if args else kwargs.get("op")
        with retained_heap(getattr(op, "device", "cpu")):
            return fn(*args, **kwargs)

    return wrapper
