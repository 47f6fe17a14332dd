"""RevocationKeys on Redis: one key per revoked session with its expiry, read back as the seconds left."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from storage.revocations import RevocationKeys


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys(redis: Redis, redis_prefix: str) -> RevocationKeys:
    return RevocationKeys(redis, prefix=redis_prefix)


async def test_a_session_without_a_key_is_not_revoked(keys: RevocationKeys) -> None:
    assert await keys.seconds_left(uuid.uuid4()) is None


async def test_put_writes_one_expiring_key_per_session(keys: RevocationKeys, redis: Redis, redis_prefix: str) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await keys.put({first: 30, second: 0})
    assert 0 < (await keys.seconds_left(first) or 0) <= 30
    # A session whose tokens are about to expire still gets a key for a second, not one without expiry.
    assert await redis.ttl(f"{redis_prefix}:revoked-session:{second}") == 1
    await keys.put({})  # nothing pending: no error, nothing written


async def test_a_key_without_expiry_reads_as_zero_seconds(
    keys: RevocationKeys, redis: Redis, redis_prefix: str
) -> None:
    session_id = uuid.uuid4()
    await redis.set(f"{redis_prefix}:revoked-session:{session_id}", b"1")
    try:
        assert await keys.seconds_left(session_id) == 0
    finally:
        await redis.delete(f"{redis_prefix}:revoked-session:{session_id}")
