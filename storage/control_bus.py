"""Commands between nodes: a client event (say `ai:stop`) reaches only the node holding that socket, but
the reply may run on another. With Redis the command is published on a channel every node listens
to; without Redis there is one node and the command is handled in place."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[None]]


class ControlBus:
    def __init__(self, redis: Redis | None, *, prefix: str) -> None:
        self._redis = redis
        self._channel = f"{prefix}:control"
        self._handler: Handler | None = None
        self._task: asyncio.Task[None] | None = None

    def on_command(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, command: dict[str, Any]) -> None:
        if self._redis is not None:
            try:
                await self._redis.publish(self._channel, json.dumps(command))
                return
            except RedisError as err:
                log.warning("control command handled locally: redis unreachable", error=str(err))
        if self._handler is not None:
            await self._handler(command)

    async def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(), name="control-bus")

    async def _listen(self) -> None:
        """Supervised: if the subscription dies (Redis restart), resubscribe with backoff."""
        assert self._redis is not None
        delay = 0.5
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    delay = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") != "message" or self._handler is None:
                            continue
                        try:
                            await self._handler(json.loads(message["data"]))
                        except Exception:
                            log.exception("control command failed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as err:
                log.warning("control bus listener lost redis; retrying", error=str(err), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
