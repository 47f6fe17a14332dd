"""Declaring REST endpoints: one decorator gives routing, body/query validation, response shaping and
the OpenAPI entry, so the document can never drift from what the handlers accept."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from uuid import UUID

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from core.entities import Principal
from core.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized, ValidationFailed
from core.validation import MAX_JSON_DEPTH, nested_deeper_than, parse
from handlers.keys import AUTH_SERVICE, SETTINGS

Handler = Callable[..., Awaitable[Any]]
M = TypeVar("M", bound=BaseModel)
USER_KEY = "user"
# What the authentication middleware read from the Authorization header: a bearer token, or the error
# that endpoints needing a user answer (public endpoints never look, so a stale header cannot hurt them).
CREDENTIALS_KEY = "credentials"


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    auth: bool = True
    # Error statuses the handler or its service answer, beyond those the declaration implies (see
    # handlers.openapi: 401/403/503 with auth, 400/413/422 with a body, 422 with a query or path id).
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    # Other answers than `status`: status -> the response type (None: no body).
    other_statuses: dict[int, Any] = field(default_factory=dict)
    # Other media types `status` may come as: content type -> the response type.
    other_content: dict[str, Any] = field(default_factory=dict)
    # Path parameters that are not UUIDs (every other `{name}` is one): name -> type.
    path_params: dict[str, Any] = field(default_factory=dict)
    # Bodies a handler reads itself (multipart uploads), for the document: content type -> model.
    body_content: dict[str, Any] = field(default_factory=dict)
    # Request headers a handler reads, for the document: name -> (type, description).
    header_params: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def adapter(self) -> TypeAdapter[Any] | None:
        return TypeAdapter(self.response) if self.response is not None else None


class Api:
    """A group of endpoints (one per handlers/ module), added to the app by `register_apis`."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        auth: bool = True,
        errors: tuple[int, ...] = (),
        content_type: str = "application/json",
        other_statuses: dict[int, Any] | None = None,
        other_content: dict[str, Any] | None = None,
        path_params: dict[str, Any] | None = None,
        body_content: dict[str, Any] | None = None,
        header_params: dict[str, tuple[Any, str]] | None = None,
    ) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method,
                    path,
                    fn,
                    summary,
                    self.tag,
                    body,
                    query,
                    response,
                    status,
                    auth,
                    errors,
                    content_type,
                    other_statuses or {},
                    other_content or {},
                    path_params or {},
                    body_content or {},
                    header_params or {},
                )
            )
            return fn

        return decorate


def register_apis(app: web.Application, apis: list[Api], *, json_max_bytes: int) -> None:
    """Adds every endpoint to the app's router. A path variable never captures a literal segment that
    another route has in its place: `/personas/search` is the search, never the persona with id "search",
    so the Allow header of a 405 lists what the path really offers, and GET /personas/import is a 405
    rather than a 422 about an id."""
    endpoints = [endpoint for api in apis for endpoint in api.endpoints]
    paths = [endpoint.path for endpoint in endpoints]
    for endpoint in endpoints:
        app.router.add_route(
            endpoint.method, _route_pattern(endpoint.path, paths), _make_view(endpoint, json_max_bytes)
        )


def _is_variable(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _route_pattern(path: str, paths: list[str]) -> str:
    """`path` with each variable constrained to exclude the literals other same-shaped paths have there."""
    segments = path.split("/")
    others = [p.split("/") for p in paths if p != path and p.count("/") == path.count("/")]
    out = []
    for index, segment in enumerate(segments):
        literals = sorted(
            {
                other[index]
                for other in others
                if not _is_variable(other[index])
                and all(
                    a == b or _is_variable(a) or _is_variable(b)
                    for k, (a, b) in enumerate(zip(segments, other, strict=True))
                    if k != index
                )
            }
        )
        if _is_variable(segment) and literals:
            exclude = "|".join(re.escape(literal) for literal in literals)
            segment = f"{{{segment[1:-1]}:(?!(?:{exclude})(?:/|$))[^{{}}/]+}}"
        out.append(segment)
    return "/".join(out)


def _make_view(endpoint: Endpoint, json_max_bytes: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    adapter = endpoint.adapter()

    async def view(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if endpoint.auth:
            kwargs["user"] = await current_user(request)
        if endpoint.body is not None:
            kwargs["body"] = parse_model(endpoint.body, await read_json(request, json_max_bytes))
        if endpoint.query is not None:
            kwargs["query"] = parse(endpoint.query, dict(request.query), root="query")
        result = await endpoint.handler(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        payload = adapter.dump_json(adapter.validate_python(result)) if adapter else json.dumps(result).encode()
        return web.Response(body=payload, status=endpoint.status, content_type="application/json")

    view.__endpoint__ = endpoint  # type: ignore[attr-defined]
    view.__name__ = endpoint.handler.__name__
    view.__doc__ = endpoint.handler.__doc__
    return view


def model_response(model: BaseModel, *, status: int) -> web.Response:
    """A wire model as the JSON body of an answer whose status differs from the endpoint's usual one (202)."""
    return web.Response(body=model.model_dump_json(), status=status, content_type="application/json")


async def current_user(request: web.Request) -> Principal:
    """The signed-in user (checked once per request), or 401 with the reason the token was refused."""
    user = request.get(USER_KEY)
    if user is not None:
        return cast(Principal, user)
    credentials = request.get(CREDENTIALS_KEY)
    if credentials is None:
        raise Unauthorized("sign in first: send Authorization: Bearer <access token>")
    if isinstance(credentials, AppError):
        raise credentials
    user = await request.app[AUTH_SERVICE].authenticate(credentials)
    request[USER_KEY] = user
    structlog.contextvars.bind_contextvars(user_id=str(user.id))
    return user


async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    if not raw:
        return {}
    return load_json(raw)


def load_json(raw: bytes, *, what: str = "body") -> Any:
    """RFC 8259 JSON (UTF-8, no NaN or Infinity, no lone surrogates), at most MAX_JSON_DEPTH deep, or 400
    `invalid_json`. orjson parses without recursion in Python, so no depth can raise RecursionError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if "depth" in str(err) or "recursion" in str(err).lower():  # orjson stops at 1024 levels
            raise _too_deep(what) from err
        raise BadRequest(f"{what} is not valid JSON: {err}", code="invalid_json") from err
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        raise _too_deep(what)
    return data


def _too_deep(what: str) -> BadRequest:
    return BadRequest(f"{what} is not valid JSON here: nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")


def parse_model(model: type[M], data: Any) -> M:
    """A JSON body (from read_json) as `model`: JSON types as the schema says them, 422 naming the field."""
    return parse(model, data, root="body", json_types=True)


def path_uuid(request: web.Request, name: str = "id") -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError as err:
        raise ValidationFailed(f"{name}: not a valid id", details=[{"field": name, "message": "not a UUID"}]) from err


def error_response(err: AppError, request_id: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": err.to_dict()}
    if request_id:
        body["error"]["request_id"] = request_id
    return web.json_response(body, status=err.status, headers=err.headers)


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: web.Request) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy (TRUSTED_PROXIES), the
    rightmost X-Forwarded-For address that is not itself a trusted proxy (left of it can be forged)."""
    peer = request.remote or "unknown"
    networks = request.app[SETTINGS].trusted_proxy_networks
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer
