"""The web app at `/` in a real headless Chromium (Debian's `chromium`, driven by npm playwright-core): sign
up, a persona with a greeting, a reply streaming in, a reload mid-reply, regenerate and switch variants,
360 px without overflow, every control named, no console error and no request to another host. Screenshots
land in tests/web/shots/ (artifacts)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from server.app import create_app
from server.config import Settings
from tests.helpers import JS_DIR, free_port, run_node_checks

SHOTS = Path(__file__).resolve().parent / "shots"


async def test_the_web_app_in_chromium(settings: Settings) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "install Debian's chromium (apt-get install -y chromium): the README's test command does"
    assert (JS_DIR / "node_modules" / "playwright-core").exists(), "run: npm ci --prefix tests/js"
    # The demo provider paced so that a reply streams over many frames.
    runner = web.AppRunner(create_app(settings.model_copy(update={"demo_token_delay_ms": 40})))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    SHOTS.mkdir(exist_ok=True)
    env = {"PARLOR_URL": f"http://127.0.0.1:{port}", "SHOTS": str(SHOTS), "CHROMIUM": chromium}
    try:
        checks = await run_node_checks("web_app.mjs", env, limit=240)
    finally:
        await runner.cleanup()
    assert len(checks) == 12


async def test_the_page_is_served_with_a_strict_policy(client: Any) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    script = await client.get("/web/vendor/socket.io.esm.min.js")
    assert script.status == 200 and "javascript" in script.content_type
    assert (await client.get("/web/vendor/socket.io-client.LICENSE")).status == 200
