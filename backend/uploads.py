"""Streaming multipart uploads straight into the blob store, with the size limit enforced.

Starlette's form parser spools a whole file to a temporary file before a handler sees it, which
would let an oversize upload fill the disk before it is refused. :func:`receive_upload` parses the
request stream itself (python-multipart's push parser): the ``file`` part goes chunk by chunk
into a :class:`~backend.blobs.BlobWriter` that hashes it and stops at the limit, removing the
partial file at once; the small text fields are kept in memory (capped). A full disk answers 507
``insufficient_storage`` (:class:`~backend.blobs.StorageFull`), also with the partial file removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.blobs import BlobStore, BlobWriter, UploadTooLarge
from backend.core.errors import ServiceError

MAX_FIELD_BYTES = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and the small fields around the file


@dataclass
class Upload:
    """A received upload: the file's temp writer (not yet committed) and the text fields."""

    writer: BlobWriter
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


def too_large(limit: int) -> ServiceError:
    return ServiceError(
        "payload_too_large",
        f"the upload is larger than the limit of {limit / (1024 * 1024):g} MB "
        "(GENSCOPE_MAX_UPLOAD_MB)",
        {"limit_bytes": limit},
    )


class _Parts:
    def __init__(self, store: BlobStore, limit: int, file_field: str) -> None:
        self.store, self.limit, self.file_field = store, limit, file_field
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name = ""
        self.filename: str | None = None
        self.buffer = bytearray()
        self.writer: BlobWriter | None = None
        self.upload_name = ""
        self.fields: dict[str, str] = {}
        self.in_file = False

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.filename = b"", "", None
        self.buffer = bytearray()
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        self.filename = None if raw_filename is None else raw_filename.decode("utf-8", "replace")
        if self.name == self.file_field and self.filename is not None:
            if self.writer is not None:
                raise ServiceError("bad_request", f"only one {self.file_field!r} part is allowed")
            self.writer = self.store.writer(self.limit)
            self.upload_name = self.filename
            self.in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            assert self.writer is not None
            self.writer.write(data[start:end])
        else:
            self.buffer.extend(data[start:end])
            if len(self.buffer) > MAX_FIELD_BYTES:
                raise ServiceError("bad_request", f"form field {self.name!r} is too long")

    def on_part_end(self) -> None:
        if self.in_file:
            assert self.writer is not None
            self.writer.close()
        elif self.name:
            self.fields[self.name] = self.buffer.decode("utf-8", "replace")
        self.in_file = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }


async def receive_upload(
    request: Request, store: BlobStore, limit: int, file_field: str = "file"
) -> Upload:
    """Stream a multipart request's ``file`` part into the blob store's temp folder.

    Raises:
        ServiceError: 413 ``payload_too_large`` (nothing left on disk), 507
            ``insufficient_storage`` when the disk fills up (nothing left either), 415 when the
            request is not multipart, 400 when the ``file`` part is missing or the body is
            malformed.
    """
    content_type = request.headers.get("content-type", "")
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise ServiceError(
            "unsupported_media_type", "send the file as multipart/form-data in a 'file' field"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise too_large(limit)
    parts = _Parts(store, limit, file_field)
    parser = MultipartParser(options[b"boundary"], parts.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except UploadTooLarge:
        raise too_large(limit) from None
    except ServiceError:
        if parts.writer is not None:
            parts.writer.discard()
        raise
    except BaseException as exc:
        if parts.writer is not None:
            parts.writer.discard()
        if isinstance(exc, Exception):
            raise ServiceError("bad_request", f"malformed multipart body ({exc})") from None
        raise
    if parts.writer is None:
        raise ServiceError("bad_request", f"the form has no {file_field!r} file part")
    if parts.writer.size == 0:
        parts.writer.discard()
        raise ServiceError("bad_request", "the uploaded file is empty")
    return Upload(parts.writer, parts.upload_name, parts.fields)
