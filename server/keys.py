"""Keys only the composition root uses: the whole configuration (layers below get plain settings), the
server's secret (tokens and signed links derive their keys from it) and the rate limiter the services it
builds share."""

from __future__ import annotations

from aiohttp import web

from server.config import Settings
from storage.ratelimit import RateLimiter

CONFIG = web.AppKey("config", Settings)
LIMITER = web.AppKey("limiter", RateLimiter)
SECRET = web.AppKey("secret", str)
