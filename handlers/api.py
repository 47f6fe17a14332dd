"""Declaring REST endpoints: one decorator gives routing, body/query validation, response shaping and
the OpenAPI entry, so the document can never drift from what the handlers accept."""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from server.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized, ValidationFailed
from server.keys import SETTINGS
from server.validation import parse
from storage.users import UserRow

Handler = Callable[..., Awaitable[Any]]
M = TypeVar("M", bound=BaseModel)
USER_KEY = "user"


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
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    extra_responses: dict[str, Any] = field(default_factory=dict)

    def adapter(self) -> TypeAdapter[Any] | None:
        return TypeAdapter(self.response) if self.response is not None else None


class Api:
    """A group of endpoints (one per handlers/ module), added to the app by `register(app)`."""

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
    ) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(method, path, fn, summary, self.tag, body, query, response, status, auth, errors, content_type)
            )
            return fn

        return decorate

    def register(self, app: web.Application, *, json_max_bytes: int) -> None:
        for endpoint in self.endpoints:
            view = _make_view(endpoint, json_max_bytes)
            app.router.add_route(endpoint.method, endpoint.path, view)


def _make_view(endpoint: Endpoint, json_max_bytes: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    adapter = endpoint.adapter()

    async def view(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if endpoint.auth:
            kwargs["user"] = current_user(request)
        if endpoint.body is not None:
            kwargs["body"] = parse_model(endpoint.body, await read_json(request, json_max_bytes))
        if endpoint.query is not None:
            kwargs["query"] = parse_model(endpoint.query, dict(request.query))
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


def current_user(request: web.Request) -> UserRow:
    user = request.get(USER_KEY)
    if user is None:
        raise Unauthorized("sign in first: send Authorization: Bearer <access token>")
    return cast(UserRow, user)


async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest("body is not valid JSON", code="invalid_json") from err


def parse_model(model: type[M], data: Any) -> M:
    return parse(model, data, root="body")


def path_uuid(request: web.Request, name: str = "id") -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError as err:
        raise ValidationFailed(f"{name}: not a valid id", details=[{"field": name, "message": "not a UUID"}]) from err


def encode_cursor(position: BaseModel) -> str:
    """An opaque `next_cursor`: the position model as URL-safe base64 JSON. Clients pass it back as is."""
    return base64.urlsafe_b64encode(position.model_dump_json().encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, model: type[M]) -> M | None:
    """The position in a cursor made by `encode_cursor`; None for no cursor; 422 naming `cursor` if it
    was not made by us (or was made for another list)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return model.model_validate_json(raw)
    except ValueError as err:  # bad base64, bad JSON, wrong shape: all ValueErrors
        raise ValidationFailed(
            "cursor: invalid", details=[{"field": "cursor", "message": "not a cursor from this list"}]
        ) from err


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
