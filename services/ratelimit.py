"""Rate limits on the `limits` library: in Redis when configured (shared by every node), else in memory."""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from server.errors import RateLimited

log = structlog.get_logger(__name__)


class RateLimiter:
    def __init__(self, redis_url: str | None, *, prefix: str) -> None:
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            storage: Storage = RedisStorage(
                "async+" + redis_url, implementation="redispy", key_prefix=f"{prefix}:rl", wrap_exceptions=True
            )
            self._shared = MovingWindowRateLimiter(storage)
        self._warned = False

    async def check(self, scope: str, per_minute: int, *identifiers: str) -> None:
        """Count one hit; raise RateLimited (with Retry-After) when the window is full. 0 = no limit."""
        if per_minute <= 0:
            return
        item = RateLimitItemPerMinute(per_minute)
        limiter = self._shared or self._memory
        try:
            allowed = await limiter.hit(item, scope, *identifiers)
            if allowed:
                return
            stats = await limiter.get_window_stats(item, scope, *identifiers)
        except StorageError:
            # Redis down: keep limiting on this node rather than failing the request or not limiting.
            if not self._warned:
                log.warning("rate limiter falling back to memory: redis unreachable")
                self._warned = True
            allowed = await self._memory.hit(item, scope, *identifiers)
            if allowed:
                return
            stats = await self._memory.get_window_stats(item, scope, *identifiers)
        retry_after = math.ceil(stats.reset_time - time.time())
        raise RateLimited("too many requests, try again later", retry_after=retry_after)
