"""Online/offline per user across all of the user's sockets, on every node (a Redis set of socket ids
per user when Redis is configured, a dict otherwise)."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)
KEY_TTL_SECONDS = 24 * 3600


class Presence:
    def __init__(self, redis: Redis | None, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._local: defaultdict[UUID, set[str]] = defaultdict(set)

    def _key(self, user_id: UUID) -> str:
        return f"{self._prefix}:presence:{user_id}"

    async def add(self, user_id: UUID, sid: str) -> int:
        """Registers the socket; returns how many sockets the user now has."""
        self._local[user_id].add(sid)
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.sadd(self._key(user_id), sid)
                    pipe.expire(self._key(user_id), KEY_TTL_SECONDS)
                    pipe.scard(self._key(user_id))
                    _, _, count = await pipe.execute()
                return int(count)
            except RedisError as err:
                log.warning("presence falling back to this node", error=str(err))
        return len(self._local[user_id])

    async def remove(self, user_id: UUID, sid: str) -> int:
        """Forgets the socket; returns how many sockets the user still has."""
        self._local[user_id].discard(sid)
        local = len(self._local[user_id])
        if not local:
            del self._local[user_id]
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.srem(self._key(user_id), sid)
                    pipe.scard(self._key(user_id))
                    _, count = await pipe.execute()
                return int(count)
            except RedisError as err:
                log.warning("presence falling back to this node", error=str(err))
        return local

    async def count(self, user_id: UUID) -> int:
        if self._redis is not None:
            try:
                return int(await self._redis.scard(self._key(user_id)))
            except RedisError:
                pass
        return len(self._local.get(user_id, ()))
