"""`python -m server`: run Parlor with configuration from the environment."""

from __future__ import annotations

import asyncio

import structlog
import uvloop
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.logs import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    log = structlog.get_logger("parlor")
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        data_dir=str(settings.data_dir.resolve()),
        database="external" if settings.database_url else "embedded",
        redis="configured" if settings.redis_url else "none",
    )
    # uvloop: a faster event loop (libuv); every socket event and token chunk goes through it.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # run_app turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, run on_shutdown
    # (sockets told to go), wait for in-flight requests up to the timeout, then cleanup contexts.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
