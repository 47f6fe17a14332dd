"""/api/openapi.json and /api/docs: Swagger UI served from the swagger-ui-bundle package (no CDN);
/api/asyncapi.json: the socket events, from their models in core/events.py."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from handlers.api import Api
from handlers.asyncapi import build_asyncapi
from handlers.openapi import build_openapi

api = Api("system")
VERSION = "0.1.0"
_OPENAPI_KEY = web.AppKey("openapi_doc", dict)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parlor API</title>
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script></body></html>"""
_INIT = 'window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});'


@api.route("GET", "/api/openapi.json", summary="This API's OpenAPI 3.1 document", auth=False, response=dict)
async def openapi(request: web.Request) -> dict[str, Any]:
    cache = request.app[_OPENAPI_KEY]
    if not cache:  # built on first request, once every route is registered
        cache.update(build_openapi(request.app, version=VERSION))
    return cache


@api.route("GET", "/api/asyncapi.json", summary="The socket events' AsyncAPI 3.0 document", auth=False, response=dict)
async def asyncapi(request: web.Request) -> dict[str, Any]:
    return _asyncapi_document()


@functools.cache  # the same for every app: it depends on the event models only
def _asyncapi_document() -> dict[str, Any]:
    return build_asyncapi(version=VERSION)


@api.route(
    "GET", "/api/docs", summary="Browsable API documentation", auth=False, response=str, content_type="text/html"
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


@api.route(
    "GET",
    "/api/docs/init.js",
    summary="Swagger UI start-up script",
    auth=False,
    response=str,
    content_type="application/javascript",
)
async def docs_init(request: web.Request) -> web.Response:
    # A file rather than an inline script so a strict Content-Security-Policy can forbid inline code.
    return web.Response(text=_INIT, content_type="application/javascript")


def add_static(app: web.Application) -> None:
    app[_OPENAPI_KEY] = {}
    app.router.add_static("/api/docs/static/", Path(swagger_ui_path), name="swagger_static")
