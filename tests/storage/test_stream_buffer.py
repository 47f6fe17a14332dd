"""The stream buffers, in memory and on Redis: replay from a position, then the end entry; a stream the
buffer does not hold raises core's StreamGone, the one exception the socket and REST readers catch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.errors import StreamGone
from storage.stream_buffer import BufferEntry, MemoryStreamBuffer, RedisStreamBuffer, StreamBuffer, StreamInfo


@pytest.fixture(params=["memory", "redis"])
async def buffer(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[StreamBuffer]:
    if request.param == "memory":
        yield MemoryStreamBuffer(retention_seconds=60)
        return
    client = Redis.from_url(redis_url)
    yield RedisStreamBuffer(client, prefix=redis_prefix, retention_seconds=60)
    await client.aclose()


def new_stream() -> StreamInfo:
    return StreamInfo(
        stream_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), reply_to=None
    )


async def test_follow_replays_from_a_position_then_ends(buffer: StreamBuffer) -> None:
    info = new_stream()
    await buffer.open(info)
    for index, text in enumerate(["a", "b", "c"]):
        await buffer.append(info.stream_id, index, text)
    assert [(i, n) for i, n in await buffer.live(info.session_id)] == [(info, 3)]
    await buffer.finish(info.stream_id, "ai:done", {"stream_id": info.stream_id})
    entries = [entry async for entry in buffer.follow(info.stream_id, 1)]
    assert entries == [
        BufferEntry(1, "b"),
        BufferEntry(2, "c"),
        BufferEntry(3, event="ai:done", data={"stream_id": info.stream_id}),
    ]
    assert await buffer.chunks(info.stream_id) == ["a", "b", "c"]
    assert await buffer.live(info.session_id) == []


async def test_an_unknown_stream_is_gone(buffer: StreamBuffer) -> None:
    with pytest.raises(StreamGone):
        async for _ in buffer.follow(str(uuid.uuid4()), 0):
            pass
    assert await buffer.info(str(uuid.uuid4())) is None
    assert await buffer.chunks(str(uuid.uuid4())) == []
