"""Reading an uploaded bundle from a request body with the size limit enforced while the bytes stream in."""

from __future__ import annotations

from typing import Any, Protocol

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from agents.errors import BundleTooLarge, InvalidBundle, InvalidUpload, UnsupportedUploadType

CHUNK_BYTES = 64 * 1024
# Multipart framing (boundaries, part headers, a slug field) on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
RAW_CONTENT_TYPES = frozenset({"application/javascript", "text/javascript", "application/x-javascript"})
FILE_FIELD = "file"


def too_large(limit: int) -> BundleTooLarge:
    """The one 413 every upload path answers while the body streams in (its full size is unknown)."""
    return BundleTooLarge(limit=limit)


class Readable(Protocol):
    """Anything with `read(size)`: a file, a request."""

    def read(self, size: int, /) -> bytes: ...


def read_limited(stream: Readable, *, limit: int, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """Read a stream to its end, failing as soon as more than `limit` bytes arrived."""
    data = bytearray()
    while True:
        chunk = stream.read(chunk_bytes)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise too_large(limit)


def declared_length(request: HttpRequest) -> int | None:
    """The request's Content-Length, or None when absent or malformed."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    return int(raw) if raw.isascii() and raw.isdigit() else None


class LimitedBundleUploadHandler(FileUploadHandler):
    """Keeps the one uploaded file in memory up to `limit` bytes and aborts the upload beyond it."""

    def __init__(self, request: HttpRequest | None = None, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.buffer = bytearray()

    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: str | None = None
    ) -> None:
        """Refuse before reading when the declared length already exceeds the limit."""
        if content_length > self.limit + MULTIPART_OVERHEAD_BYTES:
            raise too_large(self.limit)

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        """Only the `file` field may carry a file; a second file would double the memory bound."""
        if field_name != FILE_FIELD or self.received or self.buffer:
            raise InvalidUpload(f"Send exactly one file, in the field `{FILE_FIELD}`.")
        super().new_file(field_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        """Append a chunk; past the limit the request fails without reading the rest."""
        self.received += len(raw_data)
        if self.received > self.limit:
            raise too_large(self.limit)
        self.buffer += raw_data
        return None

    def file_complete(self, file_size: int) -> UploadedFile:
        """Hand the bytes to the view as an uploaded file."""
        from io import BytesIO

        return UploadedFile(
            file=BytesIO(bytes(self.buffer)),
            name=self.file_name,
            content_type=self.content_type,
            size=len(self.buffer),
            charset=self.charset,
        )


def read_bundle_upload(request: HttpRequest, *, limit: int) -> tuple[bytes, dict[str, str], str]:
    """The uploaded bundle's bytes, the form/query fields and the file name, read with the size limit."""
    content_type = (request.META.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    length = declared_length(request)
    fields: dict[str, str] = {key: request.GET[key] for key in request.GET}
    if not content_type and not length:
        # Clients omit the type of an empty body; what they sent is an empty bundle, not a wrong format.
        raise InvalidBundle("The bundle file is empty.", detail={"bytes": 0})
    if content_type in RAW_CONTENT_TYPES:
        if length is not None and length > limit:
            raise too_large(limit)
        data = read_limited(request, limit=limit)
        filename = request.META.get("HTTP_X_BUNDLE_FILENAME") or "bundle.mjs"
    elif content_type == "multipart/form-data":
        try:
            request.upload_handlers = [LimitedBundleUploadHandler(request, limit=limit)]
        except AttributeError:
            # Already parsed (a CSRF check read request.POST) by Django's handlers, which spill to disk.
            pass
        files = request.FILES
        fields.update({key: request.POST[key] for key in request.POST})
        upload = files.get(FILE_FIELD)
        if upload is None:
            raise InvalidUpload(f"The multipart body has no file in the field `{FILE_FIELD}`.")
        if upload.size is not None and upload.size > limit:
            raise too_large(limit)
        data = upload.read(limit + 1)
        if len(data) > limit:
            raise too_large(limit)
        filename = upload.name or "bundle.mjs"
    else:
        raise UnsupportedUploadType(detail={"content_type": content_type or None})
    if not data.strip():
        raise InvalidBundle("The bundle file is empty.", detail={"bytes": len(data)})
    return data, fields, filename[:200]
