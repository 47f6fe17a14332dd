"""`python -m server`: run Parlor with configuration from the environment.

`python -m server users promote EMAIL` (or `demote`) gives an account the admin role (or takes it).
`python -m server worker` runs background jobs (and the scheduler) without serving HTTP or sockets."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import signal
import socket
import sys
from typing import Any

import structlog
import uvloop
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.logs import configure_logging

# Errors that mean "this address cannot be listened on": reported in one line, not a traceback.
LISTEN_ERRNOS = {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL}


async def _tune_gc(app: web.Application) -> None:
    """Every socket event allocates short-lived tasks and packets, which keeps triggering full garbage
    collections over the large, long-lived start-up heap (the benchmark measured fan-out at half the
    bare python-socketio relay because of it). Freeze what exists once started, collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def docs_url(host: str, port: int) -> str:
    """The address to open in a browser: a wildcard host is reached on this machine's loopback."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/api/docs"


def _check_can_listen(host: str, port: int) -> None:
    """Bind and release the address before anything starts (the embedded database takes seconds), so a
    busy port fails at once. Raises OSError as the real bind would."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unavailable: OSError | None = None
    bound = 0
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As asyncio's create_server does: a port left in TIME_WAIT by a previous run is free, and
            # an address whose family is not enabled here (IPv6 in many containers) is skipped.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno != errno.EADDRNOTAVAIL:
                    raise
                unavailable = err
                continue
            bound += 1
    if not bound and unavailable is not None:
        raise unavailable


def serve(settings: Settings) -> int:
    log = structlog.get_logger("parlor")
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        data_dir=str(settings.data_dir.resolve()),
        database="external" if settings.database_url else "embedded",
        redis="configured" if settings.redis_url else "none",
    )
    try:
        _check_can_listen(settings.host, settings.port)
    except OSError as err:
        return _cannot_listen(log, settings, err)
    # uvloop: a faster event loop (libuv); every socket event and token chunk goes through it.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # run_app turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, run on_shutdown
    # (sockets told to go), wait for in-flight requests up to the timeout, then cleanup contexts.
    app = create_app(settings)
    if settings.gc_tuning:
        app.on_startup.append(_tune_gc)
    url = docs_url(settings.host, settings.port)

    app_url = url.removesuffix("api/docs")

    def listening(_: Any) -> None:
        # run_app calls this once the sockets listen (its own banner is not structured).
        log.info(f"listening: open {app_url} (the web app; the API at {url})", url=app_url, docs=url)

    try:
        web.run_app(
            app,
            backlog=settings.listen_backlog,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            access_log=None,
            print=listening,
        )
    except OSError as err:
        if err.errno not in LISTEN_ERRNOS:
            raise
        return _cannot_listen(log, settings, err)  # lost a race for the port after the check
    return 0


def _cannot_listen(log: Any, settings: Settings, err: OSError) -> int:
    reason = "already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err)).lower()
    log.error(
        f"cannot listen on {settings.host}:{settings.port}: {reason} (set PORT or HOST to another address)",
        host=settings.host,
        port=settings.port,
    )
    return 2


# Jobs a worker process runs at once when JOBS_CONCURRENCY does not say (it is 0 on pure API nodes).
WORKER_DEFAULT_CONCURRENCY = 4


def work(settings: Settings) -> int:
    """`python -m server worker`: the app's services and the job queue's worker, no listening socket. Stops
    on SIGTERM or SIGINT: running jobs get SHUTDOWN_TIMEOUT_SECONDS, then go back to the queue."""
    concurrency = settings.jobs_concurrency or WORKER_DEFAULT_CONCURRENCY
    settings = settings.model_copy(update={"jobs_concurrency": concurrency})
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    log = structlog.get_logger("parlor")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    log.info("worker running", concurrency=settings.jobs_concurrency)
    try:
        await stop.wait()
    finally:
        log.info("worker stopping")
        await runner.cleanup()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description="Parlor: run the server (no command).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    users = commands.add_parser("users", help="manage accounts")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("promote", "give the account the admin role"), ("demote", "make an admin a user again")):
        actions.add_parser(action, help=text).add_argument("email", help="the account's email")
    commands.add_parser("worker", help="run background jobs only (no HTTP, no sockets)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    if args.command == "users":
        from server import user_commands

        # Only warnings on stderr: the command's own answer is one line on stdout.
        configure_logging("WARNING", "console")
        return user_commands.run(args.action, args.email, settings)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "worker":
        return work(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
