"""Sessions (refresh-token families) revoked while their access tokens may still be unexpired.

An access token names its session (`sid`); a revoked session must be refused on every node at once,
without a database query per request. The truth is in PostgreSQL (the family's refresh tokens); this
module keeps the recent revocations where a request can check them cheaply:

- a local table on every node: what this node revoked, what it saw in Redis, and what was revoked in
  the last access-token lifetime when the node started (so a restart forgets nothing);
- with Redis, one key per revoked session that expires with the last access token it could cover
  (storage/revocations.py): every node checks it (one TTL) when its local table does not already know
  the session.

Redis unreachable: revocations are still written to the database and the local table, queued for
Redis until it answers again, and checks fall back to one indexed query until Redis is back (a
revoked session is never accepted because Redis is down)."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import asyncpg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.refresh_tokens import RefreshTokenStore
from storage.revocations import RevocationKeys

log = structlog.get_logger(__name__)

# Tokens are checked against each node's clock: keep entries a little past the last possible expiry.
CLOCK_SLACK_SECONDS = 60
# A stalled Redis must not stall every authenticated request.
REDIS_TIMEOUT_SECONDS = 1.0
# After a Redis failure, go straight to the database for this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0
LOCAL_MAX = 100_000


class RevokedSessions:
    def __init__(self, *, pool: asyncpg.Pool, redis: Redis | None, prefix: str, access_ttl_seconds: int) -> None:
        self._pool = pool
        self._keys = RevocationKeys(redis, prefix=prefix) if redis is not None else None
        self._keep = access_ttl_seconds + CLOCK_SLACK_SECONDS
        self._tokens = RefreshTokenStore()
        self._local: dict[UUID, float] = {}  # session id -> wall-clock time after which no token is valid
        self._unpublished: dict[UUID, float] = {}
        self._redis_retry_at = 0.0

    async def load(self) -> None:
        """Remember the sessions revoked within the last access-token lifetime (called at start)."""
        async with self._pool.acquire() as conn:
            recent = await self._tokens.revoked_families_since(conn, self._keep)
        for session_id, revoked_at in recent.items():
            self._remember(session_id, revoked_at.timestamp() + self._keep)
        if recent:
            log.info("recently revoked sessions loaded", count=len(recent))

    async def add(self, session_ids: list[UUID]) -> None:
        """Call after the revocation is committed to the database."""
        until = time.time() + self._keep
        for session_id in session_ids:
            self._remember(session_id, until)
            self._unpublished[session_id] = until
        if self._keys is not None and time.monotonic() >= self._redis_retry_at:
            try:
                await self._publish()
            except (RedisError, OSError, TimeoutError) as err:
                self._redis_failed(err)

    async def contains(self, session_id: UUID) -> bool:
        now = time.time()
        until = self._local.get(session_id)
        if until is not None:
            if until > now:
                return True
            del self._local[session_id]
        if self._keys is None:
            return False  # single node: every revocation went through this table
        if time.monotonic() < self._redis_retry_at:
            return await self._in_database(session_id)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                if self._unpublished:
                    await self._publish()
                left = await self._keys.seconds_left(session_id)
        except (RedisError, OSError, TimeoutError) as err:
            self._redis_failed(err)
            return await self._in_database(session_id)
        if left is None:
            return False
        self._remember(session_id, now + (left or self._keep))
        return True

    async def _publish(self) -> None:
        assert self._keys is not None
        pending = dict(self._unpublished)
        now = time.time()
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            await self._keys.put({session_id: int(until - now) for session_id, until in pending.items() if until > now})
        for session_id in pending:
            self._unpublished.pop(session_id, None)

    async def _in_database(self, session_id: UUID) -> bool:
        async with self._pool.acquire() as conn:
            revoked = await self._tokens.family_revoked(conn, session_id)
        if revoked:
            self._remember(session_id, time.time() + self._keep)
        return revoked

    def _redis_failed(self, err: BaseException) -> None:
        if time.monotonic() >= self._redis_retry_at:
            log.warning("session revocations: redis unreachable, checking the database", error=str(err))
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS

    def _remember(self, session_id: UUID, until: float) -> None:
        if len(self._local) >= LOCAL_MAX:
            now = time.time()
            self._local = {k: v for k, v in self._local.items() if v > now}
        self._local[session_id] = max(until, self._local.get(session_id, 0.0))
