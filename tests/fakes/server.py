"""Running a fake HTTP service on a free loopback port."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, *, cancel_on_disconnect: bool = False) -> tuple[web.AppRunner, str]:
    """Start `app` on 127.0.0.1:<free port>; returns the runner (to clean up) and the base URL.
    `cancel_on_disconnect` cancels a handler the moment its client goes, so a fake can see it."""
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=cancel_on_disconnect)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
