"""The one interface every blob store implements (a local folder, any S3-compatible service), the
errors they raise, the rule a key follows, and the open stream a read returns.

A blob is an opaque byte string under a key the caller chooses (the files service keeps the type,
name and owner in its own table). Writes are all-or-nothing: a put whose chunk iterator raises, or
that is cancelled, leaves nothing of itself under the key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

# Keys travel into file names and S3 object keys: a small alphabet keeps both safe and equal.
# Path segments are allowed ("files/<id>/thumb"); `~` is kept out so the local store can use it.
KEY_MAX_LENGTH = 200
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
# Presigned S3 URLs cannot live longer than 7 days (SigV4); the local store signs its own links.
PRESIGN_MAX_SECONDS = 7 * 24 * 3600


class BlobStoreError(Exception):
    """A blob store failure; the message says what happened."""


class BlobNotFound(BlobStoreError):
    """No blob under that key."""


class BlobRangeError(BlobStoreError):
    """The byte range asked for lies outside the blob (HTTP 416 territory)."""


class BlobStoreUnavailable(BlobStoreError):
    """The store could not be reached or refused the operation (network, credentials, missing bucket,
    full or read-only disk): nothing the user can fix."""


class InvalidBlobKey(BlobStoreError, ValueError):
    """A key outside the key alphabet: a bug in the caller, never user input."""


def check_key(key: str) -> str:
    """`key` when it follows the key rule, else InvalidBlobKey. Segments of letters, digits, `.`,
    `_` and `-` joined by `/`; no segment starts with a dot (no `..`, no hidden temp-file names)."""
    if len(key) > KEY_MAX_LENGTH or not _KEY.fullmatch(key):
        raise InvalidBlobKey(f"invalid blob key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: any start of a valid key (may end in `/`), or empty for everything."""
    stem = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and (len(prefix) > KEY_MAX_LENGTH or not _KEY.fullmatch(stem)):
        raise InvalidBlobKey(f"invalid blob key prefix {prefix!r}")
    return prefix


def resolve_range(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """The first and last byte (both included, as in HTTP's `bytes=start-end`) of a read of a blob of
    `size` bytes. No range: the whole blob ((0, -1) when it is empty). A range must begin inside the
    blob and not end before it begins; an `end` past the blob is cut to its last byte (as HTTP does
    with `bytes=0-999999`). A missing `start` means byte 0: a suffix range (`bytes=-500`) is the
    caller's to turn into a start, since it knows the size."""
    if start is None and end is None:
        return 0, size - 1
    first = 0 if start is None else start
    if first < 0 or first >= size or (end is not None and end < first):
        raise BlobRangeError(f"range {start}-{end} outside a blob of {size} bytes")
    return first, size - 1 if end is None else min(end, size - 1)


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """A Content-Disposition value that every browser reads: an ASCII `filename` fallback (quotes,
    backslashes and control characters replaced) and the exact name as RFC 5987 `filename*`."""
    kind = "inline" if inline else "attachment"
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "_" for ch in filename) or "file"
    if fallback == filename:
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class BlobStream:
    """An open read of one blob (or a byte range of it): iterate it for the bytes, then close it (or
    use `async with`). It closes itself once fully read or when a read fails. `size` is the whole
    blob's size and `start`..`end` the first and last byte being read (both included): what an HTTP
    206 answer's Content-Range carries.
    `read_chunk` returns the next bytes, or b"" at the end."""

    def __init__(
        self,
        read_chunk: Callable[[], Awaitable[bytes]],
        close: Callable[[], Awaitable[None]],
        *,
        size: int,
        start: int,
        end: int,
    ) -> None:
        self._read_chunk = read_chunk
        self._close: Callable[[], Awaitable[None]] | None = close
        self.size = size
        self.start = start
        self.end = end

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def __aiter__(self) -> BlobStream:
        return self

    async def __anext__(self) -> bytes:
        if self._close is None:
            raise StopAsyncIteration
        try:
            chunk = await self._read_chunk()
        except BaseException:
            # A read error or a cancellation: release the file or connection at once.
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """All the (remaining) bytes at once: only for blobs known to be small (thumbnails,
        attachments handed to the AI)."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            await close()

    async def __aenter__(self) -> BlobStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class BlobStore(Protocol):
    """What the files service needs from a place that keeps bytes."""

    name: str  # "local" or "s3": for logs and metrics

    async def check(self) -> None:
        """Raise BlobStoreUnavailable unless the store can be used (folder writable, bucket reachable):
        called at start so that a misconfiguration shows at once, not at the first upload."""
        ...

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """Store the chunks under `key` (replacing what was there) and return the bytes written.
        Streamed: never more than one part (S3) or one chunk (local) in memory. If `chunks` raises or
        the call is cancelled, that error comes through unchanged and nothing of this put is kept
        (a blob that was already under the key stays as it was)."""
        ...

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> int:
        """`put` for bytes already in memory (processed images, thumbnails)."""
        ...

    async def open(self, key: str, *, start: int | None = None, end: int | None = None) -> BlobStream:
        """An open read of the blob, or of its bytes `start`..`end` (both included, see resolve_range).
        BlobNotFound or BlobRangeError are raised here, before any byte, so an HTTP handler can still
        answer 404 or 416."""
        ...

    async def get_bytes(self, key: str) -> bytes:
        """The whole blob at once; only for small blobs."""
        ...

    async def size(self, key: str) -> int:
        """The blob's size in bytes; BlobNotFound when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing key is not an error."""
        ...

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Remove every blob named (batched where the store can); missing keys are not an error."""
        ...

    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str, inline: bool = False
    ) -> str | None:
        """A URL that serves the blob without our server until `expires_in` seconds from now, with
        the given Content-Type and a Content-Disposition carrying `filename`; None when the store
        cannot sign one (the local store: the files service signs its own links)."""
        ...

    def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key that starts with `prefix`, in no promised order (orphan cleanup)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used after this."""
        ...
