"""REST: /api/v1/files — upload (multipart, streamed), list, read, content (ranges, ETag), signed links,
delete. A file is its owner's alone: every other user gets 404 on every route."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core.entities import Principal, StoredFile
from core.errors import AppError, Code, ValidationFailed
from core.pages import Keyset, decode_cursor, encode_cursor
from core.validation import INT64_MAX
from core.wire import FileCategory, FileOut, Timestamp, UploadCategory
from handlers.api import Api, client_ip, path_uuid
from handlers.keys import FILES_SERVICE
from handlers.multipart import stream_upload
from handlers.schemas import CursorParam, Strict
from services.files.service import Content, FilesService

api = Api("files")
P = "/api/v1/files"
Variant = Literal["original", "thumbnail"]
# Types a browser could run if it ever took one as a page: we never store them, and nosniff + the sandbox
# CSP below stop a browser from guessing.
_CSP = "default-src 'none'; sandbox"


# How the two content routes answer: the bytes, a range of them, or "you have it already".
CONTENT_ANSWERS: dict[str, Any] = {
    "response": bytes,
    "content_type": "*/*",  # the file's own type (image/png, text/plain; charset=utf-8, application/pdf, ...)
    # A JSON file (an export) is bytes like any other: no schema to hold it to.
    "other_content": {"application/json": None},
    "other_statuses": {206: bytes, 304: None},
    "errors": (404, 416),
    "header_params": {
        "Range": (str, "bytes=START-END (one range): 206 with those bytes"),
        "If-None-Match": (str, "The ETag you have: 304 when it is still the file's"),
    },
}


class UploadForm(BaseModel):
    """multipart/form-data. Send `category` before `file` and the file is streamed to the store; sent after
    it, the file is read whole first (it still may not pass UPLOAD_MAX_BYTES)."""

    model_config = ConfigDict(extra="forbid")

    category: UploadCategory = Field(
        description="avatar and persona_image: images; knowledge_base: txt, md, pdf; chat_attachment: any type"
    )
    file: bytes = Field(
        description="jpg, png, gif, webp, pdf, txt, md, mp3, wav or m4a, at most UPLOAD_MAX_BYTES; the type comes "
        "from the content, never the name"
    )


class FileListQuery(Strict):
    category: FileCategory | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None


class ContentQuery(Strict):
    variant: Variant = "original"


class SharedQuery(Strict):
    variant: Variant = "original"
    expires: int = Field(ge=0, le=INT64_MAX)
    sig: str = Field(min_length=1, max_length=100)


class LinkIn(Strict):
    variant: Variant = "original"
    expires_in: int = Field(default=3600, ge=1, le=7 * 24 * 3600, description="Seconds the link works")


class LinkOut(BaseModel):
    url: str = Field(description="Works without a token until expires_at (with S3: a presigned URL)")
    expires_at: Timestamp


@api.route(
    "POST",
    f"{P}/upload",
    summary="Upload a file (multipart: category, then file)",
    response=FileOut,
    status=201,
    errors=(400, 403, 413, 415, 422, 429),
    body_content={"multipart/form-data": UploadForm},
)
async def upload(request: web.Request, user: Principal) -> FileOut:
    """Streamed to the blob store: past UPLOAD_MAX_BYTES the upload stops with 413 `too_large` and nothing
    is kept. The type comes from the bytes: a type the category does not take is 415 `unsupported_type`.
    Images are processed (EXIF orientation applied, metadata stripped, resized to IMAGE_MAX_SIDE, a
    thumbnail made); a broken image or one over IMAGE_MAX_PIXELS is 422 `invalid_file`. Past the plan's
    storage: 403 `storage_limit`. Rate-limited per user and per IP (429 with Retry-After)."""
    files = request.app[FILES_SERVICE]
    await files.check_rate(user, client_ip(request))
    form = await stream_upload(request, limit=files.upload_max_bytes, fields=("category",), needed=("category",))
    category = form.fields.get("category")
    if category is None:
        raise _missing_category()
    stored = await files.upload(user, category=category, filename=form.filename or "", chunks=form.chunks)
    return FileOut.of(stored)


def _missing_category() -> ValidationFailed:
    return ValidationFailed(
        "category: required (a form field, best sent before `file`)",
        details=[{"field": "category", "message": "required"}],
    )


@api.route("GET", P, summary="My files, newest first", query=FileListQuery, response=FilePage)
async def list_files(request: web.Request, user: Principal, query: FileListQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    page = await request.app[FILES_SERVICE].list(user, category=query.category, before=before, limit=query.limit)
    cursor = None
    if page.more:
        last = page.items[-1]
        cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id))
    return {"items": [FileOut.of(f) for f in page.items], "next_cursor": cursor}


@api.route("GET", f"{P}/{{id}}", summary="One of my files", response=FileOut, errors=(404,))
async def get_file(request: web.Request, user: Principal) -> FileOut:
    return FileOut.of(await request.app[FILES_SERVICE].get(user, path_uuid(request)))


@api.route(
    "GET",
    f"{P}/{{id}}/content",
    summary="A file's bytes (mine)",
    query=ContentQuery,
    **CONTENT_ANSWERS,
)
async def content(request: web.Request, user: Principal, query: ContentQuery) -> web.StreamResponse:
    """`?variant=thumbnail` for an image's thumbnail. Sent with its ETag, `Accept-Ranges: bytes`,
    `Content-Disposition` (inline for images, attachment otherwise) and `X-Content-Type-Options: nosniff`."""
    files = request.app[FILES_SERVICE]
    stored = await files.get(user, path_uuid(request))
    return await serve_file(request, files, stored, query.variant)


@api.route(
    "GET",
    f"{P}/{{id}}/shared",
    summary="A file's bytes through a signed link (no token)",
    query=SharedQuery,
    auth=False,
    **CONTENT_ANSWERS,
)
async def shared(request: web.Request, query: SharedQuery) -> web.StreamResponse:
    """The URL `POST /files/{id}/link` answers (local blob store): 404 once it has expired."""
    files = request.app[FILES_SERVICE]
    stored = await files.shared(path_uuid(request), variant=query.variant, expires=query.expires, signature=query.sig)
    return await serve_file(request, files, stored, query.variant)


@api.route(
    "POST",
    f"{P}/{{id}}/link",
    summary="A signed URL to my file that works without a token until it expires",
    body=LinkIn,
    response=LinkOut,
    errors=(404,),
)
async def link(request: web.Request, user: Principal, body: LinkIn) -> dict[str, Any]:
    """With the S3 blob store: a presigned URL to the bucket; otherwise a signed URL to this server."""
    made = await request.app[FILES_SERVICE].link(
        user,
        path_uuid(request),
        variant=body.variant,
        expires_in=body.expires_in,
        base_url=f"{request.scheme}://{request.host}",
    )
    return {"url": made.url, "expires_at": made.expires_at}


@api.route("DELETE", f"{P}/{{id}}", summary="Delete my file (its bytes are given back)", status=204, errors=(404,))
async def delete_file(request: web.Request, user: Principal) -> None:
    await request.app[FILES_SERVICE].delete(user, path_uuid(request))


# --- sending content -----------------------------------------------------------------------------


async def serve_file(request: web.Request, files: FilesService, stored: StoredFile, variant: str) -> web.StreamResponse:
    """A stored file's bytes as every content route sends them (declare the route with CONTENT_ANSWERS):
    304 for a matching If-None-Match, 206 for a Range, with its ETag, Content-Disposition and nosniff.
    The caller has decided that the user may read `stored`."""
    return await _send(request, await _content(request, files, stored, variant))


async def _content(
    request: web.Request, files: FilesService, stored: StoredFile, variant: str
) -> Content | web.Response:
    """The content to send, or the short answer a conditional or range request gets instead."""
    etag = stored.etag if variant == "original" else f"{stored.etag}-thumb"
    if _matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": "private, no-cache"})
    size = stored.size if variant == "original" else stored.stored_bytes - stored.size
    byte_range = _range(request.headers.get("Range"), size)
    if byte_range == "unsatisfiable":
        raise AppError(
            f"the range is outside the file ({size} bytes)",
            code=Code.RANGE_NOT_SATISFIABLE,
            status=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    start, end = byte_range if byte_range is not None else (None, None)
    return await files.content(stored, variant=variant, start=start, end=end)


async def _send(request: web.Request, found: Content | web.Response) -> web.StreamResponse:
    if isinstance(found, web.StreamResponse):
        return found
    partial = request.headers.get("Range") is not None and (found.start, found.end) != (0, found.size - 1)
    length = found.end - found.start + 1 if found.size else 0
    headers = {
        "Content-Type": _media_type(found.content_type),
        "Content-Length": str(length),
        "ETag": f'"{found.etag}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Content-Disposition": found.disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _CSP,
    }
    if partial:
        headers["Content-Range"] = f"bytes {found.start}-{found.end}/{found.size}"
    response = web.StreamResponse(status=206 if partial else 200, headers=headers)
    await response.prepare(request)
    async for chunk in found.chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _media_type(content_type: str) -> str:
    return f"{content_type}; charset=utf-8" if content_type.startswith("text/") else content_type


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")]
    return "*" in candidates or etag in candidates


def _range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One `bytes=` range as (start, end) inclusive; None to send everything (no header, or one we do not
    serve: several ranges, another unit, a malformed one — RFC 9110 lets a server ignore those)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    if (
        not (first.isascii() and last.isascii())
        or not (first.isdigit() or first == "")
        or not (last.isdigit() or last == "")
    ):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)
