"""Revoked sessions in Redis: one key per revoked session (`<prefix>:revoked-session:<id>`) that expires
when the last access token it could cover does, so every node can check a session with one command.
Redis errors reach the caller, which decides what an outage means (services/revoked_sessions.py)."""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from redis.asyncio import Redis


class RevocationKeys:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:revoked-session:"

    async def put(self, ttls: Mapping[UUID, int]) -> None:
        """One key per session, each expiring after its number of seconds (at least 1), in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, seconds in ttls.items():
                pipe.set(self._prefix + str(session_id), b"1", ex=max(1, seconds))
            await pipe.execute()

    async def seconds_left(self, session_id: UUID) -> int | None:
        """None when the session has no key (not revoked as far as Redis knows); else the seconds its key
        has left, 0 when Redis gives no positive figure (a key without expiry, or under a second left)."""
        ttl = int(await self._redis.ttl(self._prefix + str(session_id)))
        if ttl == -2:  # no such key
            return None
        return max(ttl, 0)
