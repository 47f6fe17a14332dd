"""Blobs as files in a local folder (by default <DATA_DIR>/blobs): one file per key at
<root>/<aa>/<key with / as ~>, where <aa> is the first byte of the key's SHA-256 in hex, so 256
folders share the files evenly whatever the keys look like.

A write goes to a hidden temp file beside its target (`.<name>.<random>.tmp`), is fsynced and then
renamed over the target: a crash or a failed upload never leaves a partial blob under a key, and a
reader always sees a whole old blob or a whole new one.

File I/O runs in asyncio's default thread pool through `asyncio.to_thread` rather than aiofiles:
aiofiles does the same thing (one executor hop per call) behind a file-like facade, and running our
own functions lets a whole step (create + open, fsync + rename + directory fsync) take one hop,
with no extra dependency."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

import structlog

from providers.blobs.base import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobStream,
    check_key,
    check_prefix,
    resolve_range,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
TEMP_SUFFIX = ".tmp"


async def _io(work: Callable[[], T], *, missing: str | None = None) -> T:
    """Run blocking file work in a thread. A missing file is BlobNotFound(`missing`) for a read of
    that key; any other disk failure (or a file gone under a write) is BlobStoreUnavailable."""
    try:
        return await asyncio.to_thread(work)
    except FileNotFoundError as err:
        if missing is not None:
            raise BlobNotFound(missing) from err
        raise BlobStoreUnavailable(f"local blob store: {err}") from err
    except OSError as err:
        raise BlobStoreUnavailable(f"local blob store: {err}") from err


def _discard(handle: IO[bytes], temp: str) -> None:
    try:
        handle.close()  # may fail flushing what a full disk refused; the file goes all the same
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


async def _discard_to_end(handle: IO[bytes], temp: str) -> None:
    """Remove a temp file even when the put is being cancelled: the shield lets the removal finish."""
    try:
        await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(_discard, handle, temp)))
    except OSError as err:
        log.warning("blob_temp_not_removed", path=temp, error=str(err))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    name = "local"

    def __init__(self, root: Path, *, read_chunk_size: int = 256 * 1024) -> None:
        self.root = Path(root)
        self._read_chunk_size = read_chunk_size

    def path(self, key: str) -> Path:
        """Where the blob under `key` lives (whether or not it exists)."""
        check_key(key)
        shard = hashlib.sha256(key.encode()).hexdigest()[:2]
        return self.root / shard / key.replace("/", "~")

    async def check(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.root} is not writable")

        await _io(probe)

    # Writing

    @staticmethod
    def _create_temp(final: Path) -> tuple[IO[bytes], str]:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=TEMP_SUFFIX)
        return os.fdopen(fd, "wb"), temp

    @staticmethod
    def _commit(handle: IO[bytes], temp: str, final: Path) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, final)
        # The rename itself is only durable once the folder's entry is on disk.
        _fsync_dir(final.parent)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        # The content type is the files service's to keep (in its table); a file has nowhere for it.
        final = self.path(key)
        handle, temp = await _io(functools.partial(self._create_temp, final))
        written = 0
        try:
            async for chunk in chunks:
                if chunk:
                    await _io(functools.partial(handle.write, chunk))
                    written += len(chunk)
            await _io(functools.partial(self._commit, handle, temp, final))
        except BaseException:
            await _discard_to_end(handle, temp)
            raise
        return written

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> int:
        async def once() -> AsyncIterator[bytes]:
            yield data

        return await self.put(key, once(), content_type=content_type)

    # Reading

    @staticmethod
    def _open_range(path: Path, start: int | None, end: int | None) -> tuple[IO[bytes], int, int, int]:
        handle = path.open("rb")
        try:
            size = os.fstat(handle.fileno()).st_size
            first, last = resolve_range(size, start, end)
            handle.seek(first)
        except BaseException:
            handle.close()
            raise
        return handle, size, first, last

    async def open(self, key: str, *, start: int | None = None, end: int | None = None) -> BlobStream:
        opening = functools.partial(self._open_range, self.path(key), start, end)
        handle, size, first, last = await _io(opening, missing=key)
        remaining = last - first + 1

        async def read() -> bytes:
            nonlocal remaining
            if remaining <= 0:
                return b""
            chunk = await _io(functools.partial(handle.read, min(self._read_chunk_size, remaining)))
            remaining -= len(chunk)
            return chunk

        async def close() -> None:
            # Closing a file opened for reading does not wait on the disk: no thread hop needed,
            # and none that a cancellation could interrupt.
            handle.close()

        return BlobStream(read, close, size=size, start=first, end=last)

    async def get_bytes(self, key: str) -> bytes:
        return await _io(self.path(key).read_bytes, missing=key)

    async def size(self, key: str) -> int:
        return (await _io(self.path(key).stat, missing=key)).st_size

    # Removing and listing

    @staticmethod
    def _unlink_all(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        await _io(functools.partial(self.path(key).unlink, missing_ok=True))

    async def delete_many(self, keys: Iterable[str]) -> None:
        paths = [self.path(key) for key in keys]
        if paths:
            await _io(functools.partial(self._unlink_all, paths))

    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str, inline: bool = False
    ) -> str | None:
        return None

    @staticmethod
    def _list(folder: Path) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except FileNotFoundError:
            return []

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        check_prefix(prefix)
        for shard in await _io(functools.partial(self._list, self.root)):
            if len(shard) != 2:
                continue
            for name in await _io(functools.partial(self._list, self.root / shard)):
                if name.startswith("."):
                    continue  # a write in progress (or left by a crash)
                key = name.replace("~", "/")
                if key.startswith(prefix):
                    yield key

    def _remove_stale_temps(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for shard in self._list(self.root):
            for name in self._list(self.root / shard):
                path = self.root / shard / name
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        if path.stat().st_mtime < cutoff:
                            path.unlink()
                            removed += 1
        return removed

    async def remove_stale_temps(self, *, older_than: float = 3600) -> int:
        """Remove temp files a crash left behind (a live write touches its file at every chunk, so
        nothing younger than `older_than` seconds is touched); returns how many went."""
        return await _io(functools.partial(self._remove_stale_temps, older_than))

    async def aclose(self) -> None:
        return None


if TYPE_CHECKING:
    # mypy checks here that the store keeps to the interface.
    _keeps_to_the_interface: type[BlobStore] = LocalBlobStore
