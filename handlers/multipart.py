"""Multipart uploads, read part by part: a file part is never held beyond its limit (413 as soon as it passes
it), small text fields are bounded, anything unexpected is 422 naming the part, a malformed body 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader

from core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

# Room for the multipart framing and small fields around the file itself.
MULTIPART_SLACK = 64 * 1024
FIELD_MAX_BYTES = 4096
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes
    fields: dict[str, str]


@dataclass
class StreamedUpload:
    """A `file` part as it arrives: the text fields that came before it, its name, and its chunks. The
    chunks end by checking that nothing but the form's end follows the file."""

    fields: dict[str, str]
    filename: str | None
    chunks: AsyncIterator[bytes]


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def _malformed() -> BadRequest:
    return BadRequest("malformed multipart body", code="invalid_multipart")


async def _parts(request: web.Request, limit: int, *, too_large: str | None = None) -> AsyncIterator[BodyPartReader]:
    """The form's parts, after the checks every upload shares (the type, a declared length past the limit;
    `too_large`: the error code for that, where it is not the generic one)."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data with a `file` part")
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise PayloadTooLarge(f"file: larger than {limit} bytes", code=too_large)
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise _invalid("file", "nested multipart is not supported")
            yield part
    except (ValueError, HttpProcessingError) as err:
        raise _malformed() from err


async def read_upload(request: web.Request, *, limit: int, fields: tuple[str, ...] = ()) -> Upload:
    """A multipart/form-data body with one `file` part of at most `limit` bytes (413 beyond, found while
    streaming: never more than the limit is held) and optional small text `fields`. Other parts: 422."""
    file: tuple[str | None, bytes] | None = None
    values: dict[str, str] = {}
    async for part in _parts(request, limit):
        name = part.name or ""
        if name == "file":
            if file is not None:
                raise _invalid("file", "send one file")
            file = (part.filename, await _read_part(part, limit, what="file"))
        elif name in fields:
            values[name] = await _read_field(part, name)
        else:
            raise _invalid(name or "(unnamed part)", "unknown field")
    if file is None:
        raise _invalid("file", "required: a multipart part named `file`")
    filename, data = file
    if not data:
        raise _invalid("file", "the file is empty")
    return Upload(filename, data, values)


async def stream_upload(
    request: web.Request, *, limit: int, fields: tuple[str, ...] = (), needed: tuple[str, ...] = ()
) -> StreamedUpload:
    """Like `read_upload`, but the file is streamed when the `needed` fields come before it (browsers'
    FormData and most HTTP clients send them in the order they were added). When one comes after it, the
    file is read first (at most `limit` bytes) and the rest of the form after it. The caller counts the
    file's bytes."""
    values: dict[str, str] = {}
    parts = _parts(request, limit, too_large="too_large")
    async for part in parts:
        name = part.name or ""
        if name == "file":
            if all(field in values for field in needed):
                return StreamedUpload(values, part.filename, _file_chunks(parts, part))
            data = await _read_part(part, limit, what="file", too_large="too_large")
            async for later in parts:
                later_name = later.name or ""
                if later_name == "file":
                    raise _invalid("file", "send one file")
                if later_name not in fields:
                    raise _invalid(later_name or "(unnamed part)", "unknown field")
                values[later_name] = await _read_field(later, later_name)
            return StreamedUpload(values, part.filename, _once(data))
        if name not in fields:
            raise _invalid(name or "(unnamed part)", "unknown field")
        values[name] = await _read_field(part, name)
    raise _invalid("file", "required: a multipart part named `file`")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(parts: AsyncIterator[BodyPartReader], part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(READ_CHUNK):
            yield chunk
    except (ValueError, HttpProcessingError) as err:
        raise _malformed() from err
    if await anext(parts, None) is not None:
        raise _invalid("file", "must be the form's last part (send the other fields before it)")


async def _read_part(part: BodyPartReader, limit: int, *, what: str, too_large: str | None = None) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            if what == "file":
                raise PayloadTooLarge(f"file: larger than {limit} bytes", code=too_large)
            raise _invalid(what, f"longer than {limit} bytes")
    return bytes(data)


async def _read_field(part: BodyPartReader, name: str) -> str:
    raw = await _read_part(part, FIELD_MAX_BYTES, what=name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _invalid(name, "not UTF-8 text") from err
