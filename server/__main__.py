"""`python -m server`: run Parlor with configuration from the environment."""

from __future__ import annotations

import asyncio
import gc

import structlog
import uvloop
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.logs import configure_logging


async def _tune_gc(app: web.Application) -> None:
    """Every socket event allocates short-lived tasks and packets, which keeps triggering full garbage
    collections over the large, long-lived start-up heap (the benchmark measured fan-out at half the
    bare python-socketio relay because of it). Freeze what exists once started, collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


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
    app = create_app(settings)
    if settings.gc_tuning:
        app.on_startup.append(_tune_gc)
    web.run_app(
        app,
        backlog=settings.listen_backlog,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
