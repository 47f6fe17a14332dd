"""The web app at `/` in a real headless Chromium (Debian's `chromium`, driven by npm playwright-core): sign
up, a persona with a greeting, a reply streaming in, stop, a reload and a network drop mid-reply, regenerate
and switch variants, edit/delete/rewind, an image attachment, typing, export with a notification, an avatar
upload, card export and import, settings; 360 px without overflow and every control named on each screen, no
console error and no request to another host. Screenshots land in tests/web/shots/ (artifacts). The first
check also runs against `python -m server` on its embedded defaults."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from server.app import create_app
from server.config import Settings
from tests.helpers import JS_DIR, free_port, run_node_checks
from tests.processes import _start, _stop, _wait_healthy

SHOTS = Path(__file__).resolve().parent / "shots"


def _chromium() -> str:
    chromium = shutil.which("chromium")
    assert chromium, "install Debian's chromium (apt-get install -y chromium): the README's test command does"
    assert (JS_DIR / "node_modules" / "playwright-core").exists(), "run: npm ci --prefix tests/js"
    return chromium


async def test_the_web_app_in_chromium(settings: Settings) -> None:
    chromium = _chromium()
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


async def test_the_first_minute_on_embedded_defaults(tmp_path: Path) -> None:
    """`python -m server` with nothing configured (embedded PostgreSQL, no Redis, demo AI): its log says
    which address to open, and there a newcomer signs up and sees a reply stream in within 10 s."""
    chromium = _chromium()
    port = free_port()
    proc = _start(tmp_path, PORT=str(port))
    try:
        await _wait_healthy(port, limit=120)
        env = {"PARLOR_URL": f"http://127.0.0.1:{port}", "CHROMIUM": chromium, "ONLY": "first"}
        checks = await run_node_checks("web_app.mjs", env, limit=120)
    finally:
        assert _stop(proc) == 0
    assert len(checks) == 1
    assert f"open http://127.0.0.1:{port}/" in (tmp_path / f"server-{port}.log").read_text()


async def test_the_page_is_served_with_a_strict_policy(client: Any) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    script = await client.get("/web/vendor/socket.io.esm.min.js")
    assert script.status == 200 and "javascript" in script.content_type
    assert (await client.get("/web/vendor/socket.io-client.LICENSE")).status == 200
