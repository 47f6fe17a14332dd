"""Request id + logging, metrics, error translation and authentication, in that order (outermost first)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from handlers.api import USER_KEY, error_response
from server.errors import AppError, PayloadTooLarge, Unauthorized, Unavailable
from server.keys import AUTH_SERVICE, METRICS
from storage.db import CONNECTION_ERRORS

log = structlog.get_logger("parlor.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _route_label(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or route.resource is None or info.http_exception is not None:
        return "unmatched"
    return route.resource.canonical


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request["request_id"] = request_id
    started = time.perf_counter()
    status = 500
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-ID"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        if not request.path.startswith(("/socket.io", "/metrics", "/healthz")):
            log.info("request", method=request.method, path=request.path, status=status, ms=round(elapsed * 1000, 1))
        structlog.contextvars.clear_contextvars()


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get("request_id")
    try:
        return await handler(request)
    except AppError as err:
        if err.status >= 500:
            log.warning("request failed", code=err.code, error=err.message)
        return error_response(err, request_id)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge("body is too large"), request_id)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        code = _HTTP_CODES.get(err.status, "http_error")
        app_err = AppError(err.reason, code=code, status=err.status)
        response = error_response(app_err, request_id)
        if err.status == 405 and "Allow" in err.headers:
            response.headers["Allow"] = err.headers["Allow"]
        return response
    except CONNECTION_ERRORS as err:
        log.warning("database unavailable", error=type(err).__name__)
        return error_response(Unavailable("the database is unavailable, try again shortly"), request_id)
    except Exception:
        log.exception("unhandled error")
        return error_response(AppError("internal error", code="internal", status=500), request_id)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attaches the user when a bearer token is sent; endpoints decide whether they need one."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <access token>'", code="invalid_token")
        user = await request.app[AUTH_SERVICE].authenticate(token.strip())
        request[USER_KEY] = user
        structlog.contextvars.bind_contextvars(user_id=str(user.id))
    return await handler(request)
