"""Request id + logging, metrics, error translation and authentication, in that order (outermost first)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from core.errors import AppError, PayloadTooLarge, Unauthorized, Unavailable
from handlers.api import CREDENTIALS_KEY, error_response
from handlers.keys import METRICS
from services.outages import DATABASE_DOWN

log = structlog.get_logger("parlor.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The status metrics and logs give a request whose client hung up before the answer was complete
# (nginx's "client closed request"). Nothing is sent: there is no one to send it to.
CLIENT_CLOSED = 499
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed (aiohttp drops the transport when the peer goes)."""
    transport = request.transport
    return transport is None or transport.is_closing()


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
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client goes (with handler_cancellation, as its test server).
        if client_gone(request):
            status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        if status == CLIENT_CLOSED:
            log.info("client disconnected", method=request.method, path=request.path, status=status)
        elif not request.path.startswith(("/socket.io", "/metrics", "/healthz")):
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
    except DATABASE_DOWN as err:
        # OSError covers both ends: the database's socket, and the client's (a write after it hung up
        # raises ConnectionResetError, as does a body read cut short). Only the first is a 503.
        if client_gone(request):
            return web.Response(status=CLIENT_CLOSED)
        log.warning("database unavailable", error=type(err).__name__)
        return error_response(Unavailable("the database is unavailable, try again shortly"), request_id)
    except Exception:
        log.exception("unhandled error")
        return error_response(AppError("internal error", code="internal", status=500), request_id)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reads the bearer token, if one is sent, for the endpoints that need a user: they check it (and answer
    401 with its reason) through handlers.api.current_user. Public endpoints never look, so a stale or
    garbage header does not stop /healthz or the plan catalogue, and costs them no database lookup."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            request[CREDENTIALS_KEY] = Unauthorized(
                "Authorization must be 'Bearer <access token>'", code="invalid_token"
            )
        else:
            request[CREDENTIALS_KEY] = token.strip()
    return await handler(request)
