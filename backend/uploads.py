"""Streaming multipart uploads straight into the blob store, with the size limit enforced.

Starlette's form parser spools a whole file to a temporary file before a handler sees it, which
would let an oversize upload fill the disk before it is refused. :func:`receive_upload` parses the
request stream itself (python-multipart's push parser): the ``file`` part goes chunk by chunk
into a :class:`~backend.blobs.BlobWriter` that hashes it and stops at the limit, removing the
partial file at once; the small text fields are kept in memory (capped). A full disk answers 507
``insufficient_storage`` (:class:`~backend.blobs.StorageFull`), also with the partial file removed.

Everything else a form can make the API hold is bounded too, and checked as the bytes arrive
(before they are kept): the number of parts (``GENSCOPE_MAX_FORM_FIELDS``, the file included),
the total size of the text fields (``GENSCOPE_MAX_FORM_KB``), each text field
(:data:`MAX_FIELD_BYTES`) and each part's headers (:data:`MAX_HEADER_BYTES`). Past a bound the
request answers 413 ``payload_too_large`` and the partial file is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.blobs import BlobStore, BlobWriter, UploadTooLarge
from backend.core.errors import ServiceError

MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024  # the headers of one part (name, filename, content type)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and the small fields around the file
DEFAULT_MAX_FIELDS = 32
DEFAULT_MAX_FORM_BYTES = 1 << 20


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


def form_too_large(message: str, detail: dict[str, Any]) -> ServiceError:
    return ServiceError("payload_too_large", message, detail)


class _Parts:
    def __init__(
        self, store: BlobStore, limit: int, file_field: str, max_fields: int, max_form_bytes: int
    ) -> None:
        self.store, self.limit, self.file_field = store, limit, file_field
        self.max_fields, self.max_form_bytes = max_fields, max_form_bytes
        self.parts = 0
        self.form_bytes = 0  # text field bytes (names and values) received so far
        self.header_bytes = 0
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
        self.parts += 1
        if self.parts > self.max_fields:
            raise form_too_large(
                f"the form has more than {self.max_fields} parts (GENSCOPE_MAX_FORM_FIELDS)",
                {"max_fields": self.max_fields},
            )
        self.header_bytes = 0
        self.disposition, self.name, self.filename = b"", "", None
        self.buffer = bytearray()
        self.in_file = False

    def _count_header(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > MAX_HEADER_BYTES:
            raise form_too_large(
                f"a form part's headers are longer than {MAX_HEADER_BYTES} bytes",
                {"max_header_bytes": MAX_HEADER_BYTES},
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        self.form_bytes += len(self.name)
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
            self.form_bytes += end - start
            if self.form_bytes > self.max_form_bytes:
                raise form_too_large(
                    f"the form's text fields are larger than {self.max_form_bytes // 1024} KB "
                    "in total (GENSCOPE_MAX_FORM_KB)",
                    {"max_form_bytes": self.max_form_bytes},
                )
            if len(self.buffer) + end - start > MAX_FIELD_BYTES:
                raise ServiceError("bad_request", f"form field {self.name!r} is too long")
            self.buffer.extend(data[start:end])

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
    request: Request,
    store: BlobStore,
    limit: int,
    file_field: str = "file",
    *,
    max_fields: int = DEFAULT_MAX_FIELDS,
    max_form_bytes: int = DEFAULT_MAX_FORM_BYTES,
) -> Upload:
    """Stream a multipart request's ``file`` part into the blob store's temp folder.

    ``max_fields`` bounds the number of parts (the file included) and ``max_form_bytes`` the
    total size of the text fields; both are checked as the parts arrive.

    Raises:
        ServiceError: 413 ``payload_too_large`` (the file or the form past a bound; nothing left
            on disk), 507
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
    parts = _Parts(store, limit, file_field, max_fields, max_form_bytes)
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
        if isinstance(exc, MultipartParseError) and str(exc).startswith("Maximum header"):
            # the parser's own bounds: one header line, the number of headers of a part
            raise form_too_large(
                f"a form part's headers are past the parser's bounds ({exc})",
                {"max_header_bytes": MAX_HEADER_BYTES},
            ) from None
        if isinstance(exc, Exception):
            raise ServiceError("bad_request", f"malformed multipart body ({exc})") from None
        raise
    if parts.writer is None:
        raise ServiceError("bad_request", f"the form has no {file_field!r} file part")
    if parts.writer.size == 0:
        parts.writer.discard()
        raise ServiceError("bad_request", "the uploaded file is empty")
    return Upload(parts.writer, parts.upload_name, parts.fields)
