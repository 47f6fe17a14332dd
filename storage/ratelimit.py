"""Rate limits on the `limits` library: in Redis when configured (shared by every node), else in memory."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from core.errors import RateLimited

log = structlog.get_logger(__name__)
T = TypeVar("T")


def per_minute(count: int) -> RateLimitItem | None:
    """`count` a minute; None (no limit) for 0."""
    return RateLimitItemPerMinute(count) if count > 0 else None


def per_hour(count: int) -> RateLimitItem | None:
    """`count` an hour; None (no limit) for 0."""
    return RateLimitItemPerHour(count) if count > 0 else None


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

    async def check(self, scope: str, per_minute_count: int, *identifiers: str) -> None:
        """Count one hit; raise RateLimited (with Retry-After) when the window is full. 0 = no limit."""
        await self.hit(per_minute(per_minute_count), scope, *identifiers)

    async def hit(self, item: RateLimitItem | None, scope: str, *identifiers: str) -> None:
        """Count one hit, or raise RateLimited when the window is already full. None = no limit."""
        if item is None:
            return
        if not await self._run(lambda limiter: limiter.hit(item, scope, *identifiers)):
            await self._refuse(item, scope, *identifiers)

    async def require_room(self, item: RateLimitItem | None, scope: str, *identifiers: str) -> None:
        """Raise RateLimited if the window is full, without counting anything (see `count`)."""
        if item is None:
            return
        if not await self._run(lambda limiter: limiter.test(item, scope, *identifiers)):
            await self._refuse(item, scope, *identifiers)

    async def count(self, item: RateLimitItem | None, scope: str, *identifiers: str) -> None:
        """Count one hit that already happened (a failed login), whether or not the window has room."""
        if item is not None:
            await self._run(lambda limiter: limiter.hit(item, scope, *identifiers))

    async def _refuse(self, item: RateLimitItem, scope: str, *identifiers: str) -> None:
        stats = await self._run(lambda limiter: limiter.get_window_stats(item, scope, *identifiers))
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited("too many requests, try again later", retry_after=retry_after)

    async def _run(self, call: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        if self._shared is not None:
            try:
                return await call(self._shared)
            except StorageError:
                # Redis down: keep limiting on this node rather than failing the request or not limiting.
                if not self._warned:
                    log.warning("rate limiter falling back to memory: redis unreachable")
                    self._warned = True
        return await call(self._memory)
