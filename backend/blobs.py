"""The content-addressed blob store: uploads and result details, named by their sha256.

Layout under ``<data_dir>/blobs``::

    objects/ab/abcdef...        one file per distinct content (sha256 of the stored bytes)
    tmp/                        uploads while they stream in; renamed into objects/ when complete

Uploads are streamed to ``tmp/`` with the size limit enforced while streaming (the partial file is
removed as soon as the limit is passed), hashed on the way, then renamed: the same content is
stored once however often it is uploaded. Measure details (per-example arrays, spectra) are gzip
JSON blobs written with a fixed mtime, so identical details dedupe too.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO


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
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self.path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise UploadTooLarge(self.limit)
        self._digest.update(chunk)
        self._fh.write(chunk)

    def discard(self) -> None:
        """Close and delete the temp file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

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
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
        return sha


class BlobStore:
    """Files named by the sha256 of their bytes under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.objects = self.root / "objects"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)

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
        return json.loads(gzip.decompress(self.path(sha256).read_bytes()))

    def tmp_files(self) -> list[Path]:
        """Files left in ``tmp/`` (the tests check that a refused upload leaves none)."""
        return sorted(p for p in self.tmp_dir.iterdir() if p.is_file())
