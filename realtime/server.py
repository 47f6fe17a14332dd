"""The Socket.IO server: in-process fan-out by default, AsyncRedisManager when REDIS_URL is set."""

from __future__ import annotations

import socketio

from server.config import Settings


def create_sio(settings: Settings) -> socketio.AsyncServer:
    manager = None
    if settings.redis_url:
        manager = socketio.AsyncRedisManager(
            settings.redis_url,
            channel=f"{settings.redis_prefix}:socketio",
            redis_options={"socket_keepalive": True, "health_check_interval": 30},
        )
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins="*" if origins == ["*"] else origins,
        # Chat payloads are small; a cap protects the node from a client sending megabytes.
        max_http_buffer_size=2_000_000,
        # Per-message deflate costs CPU on every token chunk for little gain on tiny frames.
        compression_threshold=4096,
        logger=False,
        engineio_logger=False,
    )
