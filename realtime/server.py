"""The Socket.IO server: in-process fan-out by default, AsyncRedisManager when REDIS_URL is set.

Both managers share one addition: a socket that is replaying an AI stream with `ai:resume` is skipped
by that stream's live events on its node, so it receives every chunk exactly once, in order, from the
replay (which follows the stream buffer to its end)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import socketio

from server.config import Settings

STREAM_EVENTS = frozenset({"ai:chunk", "ai:done", "ai:error"})


class ResumeAwareManager(socketio.AsyncManager):
    """Local delivery step of every emit (for the Redis manager it runs on each node after pub/sub)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resuming: defaultdict[str, set[str]] = defaultdict(set)

    async def emit(  # type: ignore[override]
        self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None, **kwargs: Any
    ) -> Any:
        if event in STREAM_EVENTS and self.resuming and isinstance(data, dict):
            replaying = self.resuming.get(str(data.get("stream_id")))
            # A replay addressed to the socket itself (room == its sid) must go through.
            if replaying and room not in replaying:
                skip = set(replaying)
                if skip_sid:
                    skip |= set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
                skip_sid = list(skip)
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)


class ResumeAwareRedisManager(socketio.AsyncRedisManager, ResumeAwareManager):
    """MRO: AsyncRedisManager → AsyncPubSubManager → ResumeAwareManager → AsyncManager, so publishing
    is unchanged and the filter applies where each node delivers to its own sockets."""


def create_sio(settings: Settings) -> socketio.AsyncServer:
    manager: ResumeAwareManager
    if settings.redis_url:
        manager = ResumeAwareRedisManager(
            settings.redis_url,
            channel=f"{settings.redis_prefix}:socketio",
            redis_options={"socket_keepalive": True, "health_check_interval": 30},
        )
    else:
        manager = ResumeAwareManager()
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins="*" if origins == ["*"] else origins,
        # Chat payloads are small: 2 MB lets an oversized message reach validation (an error ack)
        # instead of killing the connection, while still bounding what a client can send.
        max_http_buffer_size=2_000_000,
        # Per-message deflate costs CPU on every token chunk for little gain on tiny frames.
        compression_threshold=4096,
        logger=False,
        engineio_logger=False,
    )
