"""FilesService: uploads (type from the bytes, images processed in a worker pool, the storage quota counted
in the same transaction as the row), listing, content with byte ranges, signed links, delete, and the sweep
that removes what lost its row.

An upload never leaves anything behind when it fails: the blob keys it is about to write are registered
in `blob_sweep` first (due in an hour), the row takes them off in the transaction that stores it, and a
refused or broken upload deletes what it wrote at once; a crash leaves keys the sweep finds."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import Principal, StoredFile
from core.errors import AppError, Code, Forbidden, NotFound, PayloadTooLarge, Unavailable, ValidationFailed
from core.pages import Slice
from core.wire import FileOut
from providers.blobs.base import BlobNotFound, BlobStore, BlobStoreError, content_disposition
from services.files.images import InvalidImage, process_image
from services.files.links import LinkSigner
from services.files.types import UnsupportedType, sniff
from services.plans import Plans
from storage.files import FileStore
from storage.ratelimit import RateLimiter, per_minute

log = structlog.get_logger(__name__)
MIB = 1024 * 1024
CATEGORIES = ("avatar", "persona_image", "chat_attachment", "knowledge_base")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "application/pdf"})
# What each category takes (SPEC §7): images for pictures, text and PDF for knowledge, anything known for chat.
ACCEPTS: dict[str, frozenset[str] | None] = {
    "avatar": IMAGE_TYPES,
    "persona_image": IMAGE_TYPES,
    "knowledge_base": TEXT_TYPES,
    "chat_attachment": None,
}
# How many leading bytes decide the type (every signature we know sits in the first few bytes; text is
# checked on this much too, then as a whole when it is stored).
SNIFF_BYTES = 4096
# Reserved keys of an upload that never stored its row are swept after this long.
RESERVE_SECONDS = 3600
SWEEP_BATCH = 500


@dataclass(frozen=True)
class FileSettings:
    upload_max_bytes: int
    image_max_side: int
    image_max_pixels: int
    upload_rate_per_minute: int  # per user; per IP the same number times four (several users behind one NAT)
    link_max_seconds: int = 7 * 24 * 3600
    unsent_grace_seconds: int = 24 * 3600


@dataclass(frozen=True)
class Content:
    """What GET /files/{id}/content sends: the file, the variant's type and size, the byte range asked for."""

    file: StoredFile
    content_type: str
    size: int
    etag: str
    start: int
    end: int  # inclusive
    chunks: AsyncIterator[bytes]
    disposition: str  # inline for images, attachment otherwise, with the file's name


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime


class _Counted:
    """The upload's chunks, counted and hashed as they pass; past the limit the upload is cut off."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes], limit: int) -> None:
        self._first = first
        self._rest = rest
        self._limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()

    def _take(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self._limit:
            raise PayloadTooLarge(f"the file is larger than {self._limit} bytes", code=Code.TOO_LARGE)
        self.sha256.update(chunk)
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first:
            yield self._take(self._first)
        async for chunk in self._rest:
            if chunk:
                yield self._take(chunk)


async def _head(chunks: AsyncIterator[bytes], size: int) -> bytes:
    """At least `size` leading bytes (fewer only when the file is shorter)."""
    head = b""
    while len(head) < size:
        try:
            head += await anext(chunks)
        except StopAsyncIteration:
            break
    return head


class FilesService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        blobs: BlobStore,
        plans: Plans,
        limiter: RateLimiter,
        signer: LinkSigner,
        images: Callable[[], Executor],
        settings: FileSettings,
    ) -> None:
        self._pool = pool
        self._blobs = blobs
        self._plans = plans
        self._limiter = limiter
        self._signer = signer
        self._new_pool = images
        self._images = images()
        self._settings = settings
        self._store = FileStore()

    def close(self) -> None:
        """Stops the image workers (at shutdown)."""
        self._images.shutdown(wait=False, cancel_futures=True)

    @property
    def upload_max_bytes(self) -> int:
        return self._settings.upload_max_bytes

    def storage_limit(self, plan: str) -> int:
        """Bytes the plan may store; 0 = unlimited."""
        return self._plans.limits(plan).storage_mb * MIB

    async def storage_used(self, user_id: UUID) -> int:
        async with self._pool.acquire() as conn:
            return await self._store.storage_used(conn, user_id)

    # --- upload ----------------------------------------------------------------------------------

    async def check_rate(self, user: Principal, ip: str) -> None:
        """429 with Retry-After past the upload rate, per user and per IP; before the body is read."""
        rate = self._settings.upload_rate_per_minute
        await self._limiter.hit(per_minute(rate), "upload", str(user.id))
        await self._limiter.hit(per_minute(rate * 4), "upload-ip", ip)

    async def upload(
        self, user: Principal, *, category: str, filename: str, chunks: AsyncIterator[bytes]
    ) -> StoredFile:
        if category not in ACCEPTS:
            raise ValidationFailed(
                "category: one of " + ", ".join(CATEGORIES),
                details=[{"field": "category", "message": "one of " + ", ".join(CATEGORIES)}],
            )
        head = await _head(chunks, SNIFF_BYTES)
        try:
            kind = sniff(head, filename=filename, complete=len(head) < SNIFF_BYTES)
        except UnsupportedType as err:
            raise AppError(str(err), code=Code.UNSUPPORTED_TYPE, status=415) from err
        accepted = ACCEPTS[category]
        if accepted is not None and kind.content_type not in accepted:
            raise AppError(f"a {category} cannot be {kind.content_type}", code=Code.UNSUPPORTED_TYPE, status=415)
        limit = self.storage_limit(user.plan)
        used = await self.storage_used(user.id)
        if limit and used >= limit:  # already full: refuse before reading the body
            raise self._storage_full(used, limit)
        counted = _Counted(head, chunks, self._settings.upload_max_bytes)
        stem = f"files/{user.id}/{uuid.uuid4().hex}"
        is_image = kind.content_type in IMAGE_TYPES
        keys = [stem, f"{stem}.thumb"] if is_image else [stem]
        async with self._pool.acquire() as conn:
            await self._store.reserve_keys(conn, keys, sweep_after_seconds=RESERVE_SECONDS)
        written: list[str] = []
        try:
            width: int | None = None
            height: int | None = None
            thumb: int | None = None
            if is_image:
                width, height, size, etag, content_type, thumb = await self._store_image(counted, stem, written)
            else:
                written.append(stem)  # a put that fails leaves nothing; one that succeeds is discarded below
                try:
                    size = await self._blobs.put(stem, aiter(counted), content_type=kind.content_type)
                except BlobStoreError as err:
                    raise Unavailable("the file store is unavailable, try again shortly") from err
                etag, content_type = counted.sha256.hexdigest(), kind.content_type
            stored_bytes = size + (thumb or 0)
            async with self._pool.acquire() as conn, conn.transaction():
                charged = await self._store.charge(conn, user.id, stored_bytes, limit=limit)
                if charged is None:
                    raise self._storage_full(await self._store.storage_used(conn, user.id), limit)
                stored = await self._store.insert(
                    conn,
                    user_id=user.id,
                    category=category,
                    content_type=content_type,
                    size=size,
                    stored_bytes=stored_bytes,
                    width=width,
                    height=height,
                    filename=_clean_name(filename, kind.extension),
                    blob_key=stem,
                    thumb_key=f"{stem}.thumb" if thumb is not None else None,
                    etag=etag,
                )
        except BaseException:
            await self._discard(written)
            raise
        log.info("file stored", file_id=str(stored.id), category=category, content_type=content_type, size=size)
        return stored

    async def store_bytes(self, user: Principal, *, category: str, filename: str, data: bytes) -> StoredFile:
        """`upload` of bytes already in memory (a Character Card's picture): the same type check, image
        processing, size limit and storage quota."""
        return await self.upload(user, category=category, filename=filename, chunks=_once(data))

    async def store_generated(
        self, user_id: UUID, *, category: str, filename: str, content_type: str, data: bytes
    ) -> StoredFile:
        """A file the server made for the user (an export): counted in their storage, never refused for it
        (it goes when its job's result expires), and left behind by nothing when it fails."""
        stem = f"files/{user_id}/{uuid.uuid4().hex}"
        async with self._pool.acquire() as conn:
            await self._store.reserve_keys(conn, [stem], sweep_after_seconds=RESERVE_SECONDS)
        try:
            await self._put_bytes(stem, data, content_type)
            async with self._pool.acquire() as conn, conn.transaction():
                await self._store.charge(conn, user_id, len(data), limit=0)
                stored = await self._store.insert(
                    conn,
                    user_id=user_id,
                    category=category,
                    content_type=content_type,
                    size=len(data),
                    stored_bytes=len(data),
                    width=None,
                    height=None,
                    filename=filename,
                    blob_key=stem,
                    thumb_key=None,
                    etag=hashlib.sha256(data).hexdigest(),
                )
        except BaseException:
            await self._discard([stem])
            raise
        log.info("file generated", file_id=str(stored.id), category=category, size=len(data))
        return stored

    async def _store_image(
        self, counted: _Counted, stem: str, written: list[str]
    ) -> tuple[int, int, int, str, str, int]:
        """The image read whole (at most UPLOAD_MAX_BYTES), processed in the worker pool, stored with its
        thumbnail. Returns width, height, size, etag, content type and the thumbnail's size."""
        data = b"".join([chunk async for chunk in counted])
        try:
            image = await process_image(
                self._images,
                data,
                max_side=self._settings.image_max_side,
                max_pixels=self._settings.image_max_pixels,
            )
        except InvalidImage as err:
            raise ValidationFailed(str(err), code=Code.INVALID_FILE) from err
        except BrokenProcessPool as err:
            # A worker died (a decoder crash, the OOM killer): this image fails, the next gets a new pool.
            log.error("image worker pool broken: replacing it")
            self._images.shutdown(wait=False, cancel_futures=True)
            self._images = self._new_pool()
            raise Unavailable("image processing restarted, try again") from err
        del data
        await self._put_bytes(stem, image.data, image.content_type)
        written.append(stem)
        await self._put_bytes(f"{stem}.thumb", image.thumbnail, image.content_type)
        written.append(f"{stem}.thumb")
        etag = hashlib.sha256(image.data).hexdigest()
        return image.width, image.height, len(image.data), etag, image.content_type, len(image.thumbnail)

    async def _put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await self._blobs.put_bytes(key, data, content_type=content_type)
        except BlobStoreError as err:
            raise Unavailable("the file store is unavailable, try again shortly") from err

    async def _discard(self, keys: Sequence[str]) -> None:
        """Best effort: a key that stays is swept later (it is still registered)."""
        if not keys:
            return
        try:
            await self._blobs.delete_many(list(keys))
        except BlobStoreError:  # the sweep retries it
            log.warning("could not delete the blobs of a failed upload", keys=list(keys))

    def _storage_full(self, used: int, limit: int) -> Forbidden:
        return Forbidden(
            f"storage is full ({used} of {limit} bytes used): delete files or upgrade",
            code=Code.STORAGE_LIMIT,
        )

    # --- reading ---------------------------------------------------------------------------------

    async def get(self, user: Principal, file_id: UUID) -> StoredFile:
        async with self._pool.acquire() as conn:
            stored = await self._store.owned(conn, file_id, user.id)
        if stored is None:
            raise NotFound("file not found")
        return stored

    async def owned(self, user: Principal, file_ids: Sequence[UUID], *, field: str) -> list[StoredFile]:
        """The user's own files, in the order asked; 404 naming `field` when one is not theirs."""
        async with self._pool.acquire() as conn:
            found = {f.id: f for f in await self._store.owned_many(conn, list(file_ids), user.id)}
        missing = [i for i in file_ids if i not in found]
        if missing:
            raise NotFound(f"{field}: file not found", details=[{"field": field, "message": f"no file {missing[0]}"}])
        return [found[i] for i in file_ids]

    async def attachable(self, user: Principal, file_ids: Sequence[UUID]) -> list[dict[str, Any]]:
        """The files a message may carry, as stored on it (the file objects clients read): the sender's
        own, each a chat attachment or an image. 404 naming `attachments` for someone else's (or no) file,
        422 for one that cannot be attached; a file named twice is kept once."""
        unique = list(dict.fromkeys(file_ids))
        files = await self.owned(user, unique, field="attachments")
        for stored in files:
            if stored.category != "chat_attachment" and not stored.is_image:
                raise ValidationFailed(
                    f"attachments: a {stored.category} file that is not an image cannot be attached",
                    details=[{"field": "attachments", "message": f"file {stored.id} cannot be attached"}],
                )
        return [FileOut.of(f).model_dump(mode="json") for f in files]

    async def mark_attached(self, conn: asyncpg.Connection, file_ids: Sequence[UUID]) -> None:
        """In the sending transaction: sent files are no longer swept as unsent."""
        await self._store.mark_attached(conn, file_ids)

    async def attached(self, user_id: UUID, file_ids: Sequence[UUID]) -> list[StoredFile]:
        """Files a stored message carries, for its reply's prompt (those since deleted are left out)."""
        async with self._pool.acquire() as conn:
            found = {f.id: f for f in await self._store.owned_many(conn, list(file_ids), user_id)}
        return [found[i] for i in file_ids if i in found]

    async def list(
        self, user: Principal, *, category: str | None, before: tuple[datetime, UUID] | None, limit: int
    ) -> Slice[StoredFile]:
        async with self._pool.acquire() as conn:
            rows = await self._store.page(conn, user.id, category=category, before=before, limit=limit + 1)
        return Slice(rows[:limit], len(rows) > limit)

    async def content(
        self, stored: StoredFile, *, variant: str, start: int | None = None, end: int | None = None
    ) -> Content:
        """The stored bytes (or a byte range of them: `start`..`end` inclusive, clamped to the size)."""
        key = stored.blob_key
        if variant == "thumbnail":
            if stored.thumb_key is None:
                raise NotFound("this file has no thumbnail")
            key = stored.thumb_key
        # The thumbnail's size is what the row counts beyond the file itself.
        size = stored.size if variant == "original" else stored.stored_bytes - stored.size
        first = 0 if start is None else start
        last = size - 1 if end is None else min(end, size - 1)
        chunks: AsyncIterator[bytes] = _empty()
        if size and first <= last:
            # Opened here, so that missing bytes are a 404 before any response starts.
            try:
                chunks = await self._blobs.open(key, start=first, end=last)
            except BlobNotFound as err:
                log.error("file without its bytes", file_id=str(stored.id), key=key)
                raise NotFound("file content not found") from err
            except BlobStoreError as err:
                raise Unavailable("the file store is unavailable, try again shortly") from err
        etag = stored.etag if variant == "original" else f"{stored.etag}-thumb"
        inline = stored.is_image
        disposition = content_disposition(stored.filename, inline=inline)
        return Content(stored, stored.content_type, size, etag, first, last, chunks, disposition)

    async def read_bytes(self, stored: StoredFile) -> bytes:
        """A whole stored file (attachments for the AI, knowledge by id: at most UPLOAD_MAX_BYTES)."""
        content = await self.content(stored, variant="original")
        return b"".join([chunk async for chunk in content.chunks])

    # --- links -----------------------------------------------------------------------------------

    async def link(self, user: Principal, file_id: UUID, *, variant: str, expires_in: int, base_url: str) -> Link:
        return await self.owner_link(user.id, file_id, variant=variant, expires_in=expires_in, base_url=base_url)

    async def owner_link(self, user_id: UUID, file_id: UUID, *, variant: str, expires_in: int, base_url: str) -> Link:
        """A signed link to one of `user_id`'s files (a job's result has no request, only its owner). An
        empty `base_url` gives a path-only link for the local store."""
        async with self._pool.acquire() as conn:
            stored = await self._store.owned(conn, file_id, user_id)
        if stored is None:
            raise NotFound("file not found")
        if variant == "thumbnail" and stored.thumb_key is None:
            raise NotFound("this file has no thumbnail")
        expires_in = min(expires_in, self._settings.link_max_seconds)
        expires = int(time.time()) + expires_in
        key = stored.thumb_key if variant == "thumbnail" else stored.blob_key
        assert key is not None
        try:
            presigned = await self._blobs.presigned_url(
                key,
                expires_in=expires_in,
                filename=stored.filename,
                content_type=stored.content_type,
                inline=stored.is_image,
            )
        except BlobStoreError as err:
            raise Unavailable("the file store is unavailable, try again shortly") from err
        if presigned is None:
            signature = self._signer.sign(stored.id, variant, expires)
            presigned = (
                f"{base_url}/api/v1/files/{stored.id}/shared?variant={variant}&expires={expires}&sig={signature}"
            )
        return Link(presigned, datetime.fromtimestamp(expires, UTC))

    async def shared(self, file_id: UUID, *, variant: str, expires: int, signature: str) -> StoredFile:
        """The file a signed link names, while the link is valid; 404 otherwise (nothing to tell apart)."""
        if not self._signer.valid(file_id, variant, expires, signature, now=time.time()):
            raise NotFound("this link is not valid, or has expired")
        async with self._pool.acquire() as conn:
            stored = await self._store.get(conn, file_id)
        if stored is None:
            raise NotFound("file not found")
        return stored

    # --- delete and sweep ------------------------------------------------------------------------

    async def delete(self, user: Principal, file_id: UUID) -> None:
        await self.delete_owned(user.id, file_id)

    async def delete_owned(self, user_id: UUID, file_id: UUID) -> None:
        """The row and the bytes counted go in one transaction; the blobs right after (or by the sweep)."""
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._store.delete_owned(conn, file_id, user_id)
            if stored is None:
                raise NotFound("file not found")
            await self._store.refund(conn, user_id, stored.stored_bytes)
        await self.sweep_keys([k for k in (stored.blob_key, stored.thumb_key) if k])
        log.info("file deleted", file_id=str(file_id))

    async def sweep_keys(self, keys: Sequence[str] | None = None) -> int:
        """Deletes the blobs of swept keys (the given ones, or every due one) and forgets them."""
        removed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            due = await self._store.due_keys(conn, limit=SWEEP_BATCH)
            targets = [k for k in due if keys is None or k in keys]
            if not targets:
                return 0
            try:
                await self._blobs.delete_many(targets)
            except BlobStoreError:
                log.warning("blob store unavailable: the sweep tries again later", keys=len(targets))
                return 0
            await self._store.forget_keys(conn, targets)
            removed = len(targets)
        return removed

    async def sweep_orphans(self, slot: datetime) -> dict[str, Any]:
        """The scheduled run (once across processes): chat attachments never sent within the grace period
        go (their bytes given back), then every due blob."""
        unsent, blobs = await self.sweep(now=slot)
        return {"unsent_files": unsent, "blobs": blobs}

    async def sweep(self, *, now: datetime | None = None) -> tuple[int, int]:
        """Returns how many unsent files and how many blobs were removed."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self._settings.unsent_grace_seconds)
        async with self._pool.acquire() as conn:
            unsent = await self._store.delete_unsent(conn, created_before=cutoff, limit=SWEEP_BATCH)
        if unsent:
            log.info("unsent attachments removed", files=unsent)
        removed = 0
        while batch := await self.sweep_keys():
            removed += batch
            if batch < SWEEP_BATCH:
                break
        return unsent, removed


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover  (makes this an async generator)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _clean_name(filename: str, extension: str) -> str:
    """The client's name for the file, without a path, control characters or an overlong tail; the
    extension of what the content turned out to be when the name has none."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"').strip() or f"file.{extension}"
    return name[:200]
