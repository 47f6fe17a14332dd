"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from handlers.api import Api
from handlers.keys import POOL, REDIS, REGISTRY

api = Api("system")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    redis: str


@api.route("GET", "/healthz", summary="The process is alive", response=Health, auth=False)
async def healthz(request: web.Request) -> dict[str, Any]:
    return {"status": "ok"}


@api.route(
    "GET",
    "/readyz",
    summary="Database and Redis reachability",
    response=Readiness,
    auth=False,
    other_statuses={503: Readiness},
)
async def readyz(request: web.Request) -> web.Response:
    """503 when PostgreSQL is unreachable. Redis down is `degraded`: the node keeps serving alone."""
    database = "ok"
    try:
        async with asyncio.timeout(2):
            async with request.app[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means "not ready"; the reason is not for the caller
        database = "down"
    redis_state = "disabled"
    if REDIS in request.app:
        try:
            async with asyncio.timeout(2):
                await request.app[REDIS].ping()
            redis_state = "ok"
        except Exception:  # noqa: BLE001
            redis_state = "down"
    status = "ok" if database == "ok" and redis_state != "down" else ("degraded" if database == "ok" else "down")
    body = {"status": status, "database": database, "redis": redis_state}
    return web.json_response(body, status=200 if database == "ok" else 503)


@api.route("GET", "/metrics", summary="Prometheus metrics", auth=False, response=str, content_type=CONTENT_TYPE_LATEST)
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST})
