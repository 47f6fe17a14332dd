"""Keys only the composition root uses: the whole configuration (layers below get plain settings)."""

from __future__ import annotations

from aiohttp import web

from server.config import Settings

CONFIG = web.AppKey("config", Settings)
