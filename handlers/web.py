"""The web app at `/` (web/: plain ES modules, no build step), served with a Content-Security-Policy that
allows the app's own origin only: its scripts, styles, images, and its API and socket on this host."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from handlers.api import Api

api = Api("web")
WEB_DIR = Path(__file__).resolve().parents[1] / "web"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@api.route("GET", "/", summary="The web app (HTML)", auth=False, response=str, content_type="text/html")
async def index(request: web.Request) -> web.FileResponse:
    """Its scripts and styles are under /web/; it talks to this server's REST API and socket only."""
    return web.FileResponse(WEB_DIR / "index.html")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith("/web/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"


def add_static(app: web.Application) -> None:
    app.router.add_static("/web/", WEB_DIR, name="web_static")
    app.on_response_prepare.append(_secure)
