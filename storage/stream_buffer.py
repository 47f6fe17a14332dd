"""Where a live AI reply's chunks are kept until it is done, so a client that reconnects (on any node)
can replay what it missed and then follow the rest: a Redis Stream per reply when Redis is configured
(the position is the chunk index), memory otherwise."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import StreamGone

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StreamInfo:
    stream_id: str
    session_id: str
    user_id: str
    reply_to: str | None


@dataclass(frozen=True)
class BufferEntry:
    """A chunk (`event` is None) or the end of the stream (`event` is "ai:done" or "ai:error")."""

    index: int
    text: str = ""
    event: str | None = None
    data: dict[str, Any] | None = None


class StreamBuffer(Protocol):
    async def open(self, info: StreamInfo) -> None: ...

    async def append(self, stream_id: str, index: int, text: str) -> None: ...

    async def finish(self, stream_id: str, event: str, data: dict[str, Any]) -> None: ...

    async def info(self, stream_id: str) -> StreamInfo | None: ...

    async def live(self, session_id: str) -> list[tuple[StreamInfo, int]]:
        """Streams in flight for a session, each with how many chunks it has so far."""
        ...

    def follow(self, stream_id: str, from_index: int) -> AsyncIterator[BufferEntry]:
        """Chunks from `from_index` on (replayed, then live) and finally the end entry; StreamGone when
        the buffer does not hold the stream."""
        ...

    async def chunks(self, stream_id: str) -> list[str]:
        """The chunks buffered so far (none for an unknown stream), without waiting for more."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class _MemoryStream:
    info: StreamInfo
    chunks: list[str] = field(default_factory=list)
    end: BufferEntry | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStreamBuffer:
    def __init__(self, *, retention_seconds: float) -> None:
        self._streams: dict[str, _MemoryStream] = {}
        self._retention = retention_seconds

    async def open(self, info: StreamInfo) -> None:
        self._streams[info.stream_id] = _MemoryStream(info)

    def _wake(self, stream: _MemoryStream) -> None:
        stream.changed.set()
        stream.changed = asyncio.Event()

    async def append(self, stream_id: str, index: int, text: str) -> None:
        stream = self._streams[stream_id]
        assert index == len(stream.chunks), "chunks are appended in index order"
        stream.chunks.append(text)
        self._wake(stream)

    async def finish(self, stream_id: str, event: str, data: dict[str, Any]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.end = BufferEntry(len(stream.chunks), event=event, data=data)
        self._wake(stream)
        asyncio.get_running_loop().call_later(self._retention, self._drop, stream_id, stream)

    def _drop(self, stream_id: str, stream: _MemoryStream) -> None:
        # Only this run's: the same id opened again (a regenerated reply) is a new stream.
        if self._streams.get(stream_id) is stream:
            del self._streams[stream_id]

    async def info(self, stream_id: str) -> StreamInfo | None:
        stream = self._streams.get(stream_id)
        return stream.info if stream else None

    async def live(self, session_id: str) -> list[tuple[StreamInfo, int]]:
        return [
            (s.info, len(s.chunks)) for s in self._streams.values() if s.end is None and s.info.session_id == session_id
        ]

    async def follow(self, stream_id: str, from_index: int) -> AsyncIterator[BufferEntry]:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamGone(stream_id)
        index = from_index
        while True:
            while index < len(stream.chunks):
                yield BufferEntry(index, stream.chunks[index])
                index += 1
            if stream.end is not None:
                yield stream.end
                return
            await stream.changed.wait()

    async def chunks(self, stream_id: str) -> list[str]:
        stream = self._streams.get(stream_id)
        return list(stream.chunks) if stream else []

    async def aclose(self) -> None:
        self._streams.clear()


class RedisStreamBuffer:
    """Keys (under the configured prefix): `ai:{id}` the Redis Stream of chunks and the end entry,
    `ai-info:{id}` the stream's owner and session, `ai-live:{session}` the set of streams in flight."""

    BLOCK_MS = 5000
    OPEN_TTL_SECONDS = 3600  # a node that dies mid-reply leaves nothing behind for long

    def __init__(self, redis: Redis, *, prefix: str, retention_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._retention = retention_seconds

    def _key(self, stream_id: str) -> str:
        return f"{self._prefix}:ai:{stream_id}"

    def _info_key(self, stream_id: str) -> str:
        return f"{self._prefix}:ai-info:{stream_id}"

    def _live_key(self, session_id: str) -> str:
        return f"{self._prefix}:ai-live:{session_id}"

    async def open(self, info: StreamInfo) -> None:
        """A stream opened again (a reply regenerated or continued, under its message's id) starts empty."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(info.stream_id))
            pipe.set(self._info_key(info.stream_id), json.dumps(asdict(info)), ex=self.OPEN_TTL_SECONDS)
            pipe.sadd(self._live_key(info.session_id), info.stream_id)
            pipe.expire(self._live_key(info.session_id), self.OPEN_TTL_SECONDS)
            await pipe.execute()

    async def append(self, stream_id: str, index: int, text: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key(stream_id), {"i": index, "t": text})
            if index == 0:
                pipe.expire(self._key(stream_id), self.OPEN_TTL_SECONDS)
            await pipe.execute()

    async def finish(self, stream_id: str, event: str, data: dict[str, Any]) -> None:
        info = await self.info(stream_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._key(stream_id), {"e": event, "d": json.dumps(data)})
            pipe.expire(self._key(stream_id), self._retention)
            pipe.expire(self._info_key(stream_id), self._retention)
            if info is not None:
                pipe.srem(self._live_key(info.session_id), stream_id)
            await pipe.execute()

    async def info(self, stream_id: str) -> StreamInfo | None:
        raw = await self._redis.get(self._info_key(stream_id))
        return StreamInfo(**json.loads(raw)) if raw else None

    async def live(self, session_id: str) -> list[tuple[StreamInfo, int]]:
        ids = await self._redis.smembers(self._live_key(session_id))
        found = []
        for raw_id in ids:
            stream_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            info = await self.info(stream_id)
            if info is None:
                continue
            count = await self._redis.xlen(self._key(stream_id))
            found.append((info, int(count)))
        return found

    @staticmethod
    def _entry(fields: dict[bytes, bytes], next_index: int) -> BufferEntry:
        if b"e" in fields:
            return BufferEntry(next_index, event=fields[b"e"].decode(), data=json.loads(fields[b"d"]))
        return BufferEntry(int(fields[b"i"]), fields[b"t"].decode())

    async def follow(self, stream_id: str, from_index: int) -> AsyncIterator[BufferEntry]:
        key = self._key(stream_id)
        if not await self._redis.exists(self._info_key(stream_id)):
            raise StreamGone(stream_id)
        last_id = "0-0"
        next_index = 0
        deadline = time.monotonic() + self.OPEN_TTL_SECONDS
        while time.monotonic() < deadline:
            batch: Any = await self._redis.xread({key: last_id}, count=500, block=self.BLOCK_MS)
            for _, entries in batch:
                for entry_id, fields in entries:
                    last_id = entry_id
                    entry = self._entry(fields, next_index)
                    if entry.event is not None:
                        yield entry
                        return
                    next_index = entry.index + 1
                    if entry.index >= from_index:
                        yield entry
            if not batch and not await self._redis.exists(self._info_key(stream_id)):
                raise StreamGone(stream_id)

    async def chunks(self, stream_id: str) -> list[str]:
        entries: Any = await self._redis.xrange(self._key(stream_id))
        return [fields[b"t"].decode() for _, fields in entries if b"t" in fields]

    async def aclose(self) -> None:
        return None


class FallbackStreamBuffer:
    """Redis when it answers; memory (this node only) when it does not, so replies keep streaming
    through a Redis outage. A stream stays in the store it was opened in."""

    def __init__(self, redis_buffer: RedisStreamBuffer, memory: MemoryStreamBuffer) -> None:
        self._redis = redis_buffer
        self._memory = memory
        self._local: set[str] = set()

    async def open(self, info: StreamInfo) -> None:
        try:
            await self._redis.open(info)
        except RedisError as err:
            log.warning("stream buffer in memory: redis unreachable", error=str(err))
            self._local.add(info.stream_id)
            await self._memory.open(info)

    def _for(self, stream_id: str) -> StreamBuffer:
        return self._memory if stream_id in self._local else self._redis

    async def append(self, stream_id: str, index: int, text: str) -> None:
        try:
            await self._for(stream_id).append(stream_id, index, text)
        except RedisError as err:
            # Mid-stream outage: live delivery goes on; only resume of this stream is lost.
            log.warning("stream chunk not buffered: redis unreachable", stream_id=stream_id, error=str(err))

    async def finish(self, stream_id: str, event: str, data: dict[str, Any]) -> None:
        try:
            await self._for(stream_id).finish(stream_id, event, data)
        except RedisError as err:
            log.warning("stream end not buffered: redis unreachable", stream_id=stream_id, error=str(err))
        self._local.discard(stream_id)

    async def info(self, stream_id: str) -> StreamInfo | None:
        local = await self._memory.info(stream_id)
        if local is not None:
            return local
        try:
            return await self._redis.info(stream_id)
        except RedisError:
            return None

    async def live(self, session_id: str) -> list[tuple[StreamInfo, int]]:
        found = await self._memory.live(session_id)
        try:
            found += await self._redis.live(session_id)
        except RedisError:
            pass
        return found

    async def follow(self, stream_id: str, from_index: int) -> AsyncIterator[BufferEntry]:
        source: StreamBuffer = self._memory if await self._memory.info(stream_id) else self._redis
        try:
            async for entry in source.follow(stream_id, from_index):
                yield entry
        except RedisError as err:
            raise StreamGone(stream_id) from err

    async def chunks(self, stream_id: str) -> list[str]:
        if stream_id in self._local:
            return await self._memory.chunks(stream_id)
        try:
            return await self._redis.chunks(stream_id)
        except RedisError:
            return []

    async def aclose(self) -> None:
        await self._memory.aclose()
