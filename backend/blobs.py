"""The content-addressed blob store: uploads and result details, named by their sha256.

Layout under ``<data_dir>/blobs``::

    objects/ab/abcdef...        one file per distinct content (sha256 of the stored bytes)
    tmp/                        uploads while they stream in; renamed into objects/ when complete

Uploads are streamed to ``tmp/`` with the size limit enforced while streaming (the partial file is
removed as soon as the limit is passed), hashed on the way, then renamed: the same content is
stored once however often it is uploaded. Measure details (per-example arrays, spectra) are gzip
JSON blobs written with a fixed mtime, so identical details dedupe too.

Every temp file is held under an exclusive ``flock`` by the process writing it, for as long as it
is open: a lock dies with its process, so :meth:`BlobStore.remove_partial_uploads` (run at
start-up) can tell the files of a crashed or killed process (unlocked) from those another live
API process is still receiving (locked), and removes only the former.

A full disk (``ENOSPC``, or ``EDQUOT`` for a quota) while writing removes the partial temp file
and raises :class:`StorageFull`, a :class:`~backend.core.errors.ServiceError` with code
``insufficient_storage`` (HTTP 507): nothing half-written is ever left in ``tmp/`` or
``objects/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from backend.core.errors import ServiceError
from backend.memo import SizedLRU

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


class StorageFull(ServiceError):
    """The blob store's disk is full; the partial file was removed."""

    def __init__(self, root: Path, written: int) -> None:
        super().__init__(
            "insufficient_storage",
            "the server has no room left to store this file; nothing was kept "
            "(free disk space in the data directory, or upload a smaller file)",
            {"bytes_received": written},
        )
        self.root = root


class UploadTooLarge(Exception):
    """The stream passed the size limit; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload larger than {limit} bytes")
        self.limit = limit


class BlobWriter:
    """A temp file being filled chunk by chunk with a running sha256 and a size limit."""

    def __init__(self, store: BlobStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.size = 0
        self._digest = hashlib.sha256()
        try:
            fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        except OSError as exc:
            if is_no_space(exc):
                raise StorageFull(store.root, 0) from exc
            raise
        self.path = Path(name)
        # held on a descriptor of its own until the file is committed or discarded (closing
        # the write handle after the last chunk must not release it: inspection comes next)
        self._lock: int | None = os.open(name, os.O_RDONLY)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # a fresh file: nobody else holds it
        self._fh: BinaryIO = os.fdopen(fd, "wb")

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _full(self, exc: OSError) -> StorageFull:
        written = self.size
        self.discard()
        return StorageFull(self.store.root, written)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``.

        Raises:
            UploadTooLarge: the limit was passed (the temp file is removed).
            StorageFull: the disk is full (the temp file is removed).
        """
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise UploadTooLarge(self.limit)
        self._digest.update(chunk)
        try:
            self._fh.write(chunk)
        except OSError as exc:
            if is_no_space(exc):
                raise self._full(exc) from exc
            raise

    def discard(self) -> None:
        """Close and delete the temp file (idempotent; a flush failing on a full disk is
        ignored, the file is deleted anyway)."""
        if not self._fh.closed:
            with contextlib.suppress(OSError):
                self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._unlock()

    def close(self) -> None:
        """Flush and close the temp file.

        Raises:
            StorageFull: the last buffered bytes did not fit (the temp file is removed).
        """
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError as exc:
                if is_no_space(exc):
                    raise self._full(exc) from exc
                raise

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self) -> str:
        """Move the finished file into the store; return its sha256."""
        self.close()
        sha = self.sha256
        target = self.store.path(sha)
        if target.exists():
            self.discard()
        else:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path, target)
            except OSError as exc:
                if is_no_space(exc):
                    raise self._full(exc) from exc
                raise
            self._unlock()
        return sha


#: A temp file written to in the last this many seconds is never removed as partial.
PARTIAL_UPLOAD_GRACE_SECONDS = 60.0


def _unlocked(path: Path) -> bool:
    """Whether nobody holds ``path``'s lock (its writer is gone)."""
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


#: JSON text kept decoded by :meth:`BlobStore.get_json_shared` (the objects take a few times more).
JSON_MEMO_BYTES = 48 << 20


class BlobStore:
    """Files named by the sha256 of their bytes under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.objects = self.root / "objects"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)
        self._memo = SizedLRU(JSON_MEMO_BYTES)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.objects / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self, limit: int) -> BlobWriter:
        return BlobWriter(self, limit)

    def put_bytes(self, data: bytes) -> str:
        writer = self.writer(limit=max(len(data), 1))
        try:
            writer.write(data)
        except BaseException:
            writer.discard()
            raise
        return writer.commit()

    def put_json(self, obj: Any) -> str:
        """Store ``obj`` as deterministic gzip JSON (no NaN); return the blob's sha256."""
        raw = json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
        return self.put_bytes(gzip.compress(raw, compresslevel=6, mtime=0))

    def get_json(self, sha256: str) -> Any:
        """The decoded blob, a fresh copy the caller may change."""
        return json.loads(gzip.decompress(self.path(sha256).read_bytes()))

    def get_json_shared(self, sha256: str) -> Any:
        """The decoded blob from a per-store memo (:data:`JSON_MEMO_BYTES` of JSON text): blobs
        never change, so the read routes need not parse the same report twice. Read-only: the
        object is shared with other requests."""

        def load() -> tuple[Any, int]:
            raw = gzip.decompress(self.path(sha256).read_bytes())
            return json.loads(raw), len(raw)

        return self._memo.get_or_make(sha256, load)

    def remove_partial_uploads(self, *, older_than: float | None = None) -> list[Path]:
        """Delete the temp files no live process is writing: the partial uploads of a process
        that died (``kill -9``, a crash, a power cut). Returns the removed paths.

        A file is removed only when its lock can be taken (its writer is gone) and it was last
        written before ``older_than`` (a timestamp; default: :data:`PARTIAL_UPLOAD_GRACE_SECONDS`
        ago), so that a file another API process created an instant ago, between creating it
        and locking it, is left alone. Safe with several API processes on one data directory.
        """
        cutoff = time.time() - PARTIAL_UPLOAD_GRACE_SECONDS if older_than is None else older_than
        removed: list[Path] = []
        for path in sorted(self.tmp_dir.iterdir()):
            try:
                if path.is_symlink():  # a named link made for an inspection
                    if not path.exists() or (path.lstat().st_mtime < cutoff and _unlocked(path)):
                        path.unlink()
                        removed.append(path)
                    continue
                if not path.is_file() or path.stat().st_mtime >= cutoff:
                    continue
                with open(path, "rb") as fh:
                    try:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # being written by a live process
                    path.unlink()  # still locked by us: no writer can be mid-way
                    removed.append(path)
            except FileNotFoundError:
                continue  # committed or discarded meanwhile
        return removed

    def tmp_files(self) -> list[Path]:
        """Files left in ``tmp/`` (the tests check that a refused upload leaves none)."""
        return sorted(p for p in self.tmp_dir.iterdir() if p.is_file())
