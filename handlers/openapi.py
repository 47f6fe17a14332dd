"""Builds the OpenAPI 3.1 document from the app's router and the endpoints' pydantic schemas.

Clients generate code from it, so it says what the server does: component names are unique (two
different schemas under one name fail the build), path ids are UUIDs, limits that come from settings
are the configured ones, and every status an endpoint answers is listed. tests/handlers/
test_openapi_fuzz.py holds the server to it with schemathesis."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from handlers.api import Endpoint
from handlers.keys import SETTINGS

_REF = "#/components/schemas/{model}"
# In a field's JSON schema (json_schema_extra): its maxLength is this setting's value, not the model's
# static bound (the service enforces the setting).
MAX_LENGTH_SETTING = "x-max-length-setting"
_STATUS_TEXT = {
    400: "Malformed request (`invalid_json`: not JSON, or nested too deep)",
    401: "Not signed in, or the token is bad",
    402: "Not enough credits",
    403: "Not allowed (`banned` for a banned account)",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported content type",
    416: "The Range is outside the file (`range_not_satisfiable`)",
    422: "Invalid field (named in the error)",
    429: "Rate limited (see Retry-After)",
    502: "The upstream service (AI provider, Stripe, Google Play) failed",
    503: "A dependency is unavailable, or the feature is not configured (`*_disabled`)",
    504: "The upstream service timed out",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
                "request_id": {"type": "string"},
            },
        }
    },
}
_DESCRIPTION = (
    "Realtime server for AI persona chat apps. Socket events: see docs/events.md. Errors, limits and bad "
    "input: see docs/api.md. Strings may not contain U+0000 (422); JSON bodies are RFC 8259 JSON nested at "
    "most 64 levels (400 `invalid_json`); integers in query strings are ASCII digits."
)


class DuplicateSchemaName(RuntimeError):
    """Two different schemas would share one component name: rename one of the models."""


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
        self._origin: dict[str, str] = {"Error": __name__}

    def add(self, name: str, schema: dict[str, Any], origin: str) -> None:
        if name in self.schemas and self.schemas[name] != schema:
            raise DuplicateSchemaName(
                f"two different schemas are named {name!r} (from {self._origin[name]} and {origin}): rename one"
            )
        self.schemas[name] = schema
        self._origin.setdefault(name, origin)

    def schema(self, tp: Any, mode: str) -> dict[str, Any]:
        """`tp`'s JSON schema; models (and the models inside) become components, referenced."""
        if tp is bytes:
            return {"type": "string", "format": "binary"}
        origin = f"{getattr(tp, '__module__', '?')}.{getattr(tp, '__qualname__', tp)}"
        schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        for name, sub in schema.pop("$defs", {}).items():
            self.add(name, sub, origin)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.add(tp.__name__, schema, origin)
            return {"$ref": _REF.format(model=tp.__name__)}
        return schema


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent is how a client says "none", so `null` is no alternative."""
    alternatives = prop.get("anyOf")
    if alternatives:
        rest = [a for a in alternatives if a != {"type": "null"}]
        if len(rest) == 1 and len(rest) < len(alternatives):
            prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **rest[0]}
    return {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}


def _path_variables(path: str) -> list[str]:
    return re.findall(r"\{([^}:]+)\}", path)


def _parameters(path: str, endpoint: Endpoint, components: _Components) -> list[dict[str, Any]]:
    params = []
    for name in _path_variables(path):
        tp = endpoint.path_params.get(name, UUID)
        params.append({"name": name, "in": "path", "required": True, "schema": components.schema(tp, "validation")})
    for name, (tp, description) in endpoint.header_params.items():
        schema = components.schema(tp, "validation")
        params.append({"name": name, "in": "header", "required": False, "description": description, "schema": schema})
    if endpoint.query is not None:
        schema = endpoint.query.model_json_schema(ref_template=_REF)
        for def_name, sub in schema.pop("$defs", {}).items():
            components.add(def_name, sub, f"{endpoint.query.__module__}.{endpoint.query.__qualname__}")
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop)}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _content(tp: Any, content_type: str, components: _Components) -> dict[str, Any]:
    if tp is None:
        return {content_type: {}}
    return {content_type: {"schema": components.schema(tp, "serialization")}}


def _success(endpoint: Endpoint, status: int, tp: Any, components: _Components) -> dict[str, Any]:
    # Bytes answers (a file, a range of it) come in the endpoint's own media type.
    content_type = endpoint.content_type if status == endpoint.status or tp is bytes else "application/json"
    other = endpoint.other_content if status == endpoint.status or tp is bytes else {}
    if status == 204 or (tp is None and not other and content_type == "application/json"):
        return {"description": "Done"}
    content = _content(tp, content_type, components)
    for media, other_tp in other.items():
        content.update(_content(other_tp, media, components))
    return {"description": "OK" if status < 300 else _STATUS_TEXT.get(status, "Error"), "content": content}


def error_statuses(endpoint: Endpoint) -> set[int]:
    """What an endpoint can answer besides success: what its declaration implies, and what it declares."""
    statuses = set(endpoint.errors)
    if endpoint.auth:
        statuses |= {401, 403}  # no token or a bad one; a banned account
    if endpoint.body is not None:
        statuses |= {400, 413, 422}
    if endpoint.auth or endpoint.body is not None:
        statuses.add(503)  # the database unreachable (public endpoints without a body read configuration only)
    if endpoint.query is not None or endpoint.header_params or _path_variables(endpoint.path):
        statuses.add(422)
    return statuses


def _operation(method: str, path: str, endpoint: Endpoint, components: _Components) -> dict[str, Any]:
    doc = (endpoint.handler.__doc__ or "").strip()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    op: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}", "summary": endpoint.summary}
    if doc:
        op["description"] = doc
    op["tags"] = [endpoint.tag]
    if endpoint.auth:
        op["security"] = [{"bearerAuth": []}]
    if endpoint.body is not None:
        # A missing body is read as {}: it is optional when every field is (and {} is taken).
        required = any(f.is_required() for f in endpoint.body.model_fields.values()) or bool(
            endpoint.body.model_json_schema().get("minProperties")
        )
        op["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": components.schema(endpoint.body, "validation")}},
        }
    elif endpoint.body_content:
        content = {
            media: {"schema": components.schema(tp, "validation")} for media, tp in endpoint.body_content.items()
        }
        op["requestBody"] = {"required": True, "content": content}
    responses: dict[str, Any] = {
        str(endpoint.status): _success(endpoint, endpoint.status, endpoint.response, components)
    }
    for status in sorted(error_statuses(endpoint) - set(endpoint.other_statuses)):
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    for status, tp in endpoint.other_statuses.items():
        responses[str(status)] = _success(endpoint, status, tp, components)
    op["responses"] = dict(sorted(responses.items()))
    params = _parameters(path, endpoint, components)
    if params:
        op["parameters"] = params
    return op


def _static(path: str) -> dict[str, Any]:
    return {
        "operationId": "get_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") + "_file",
        "summary": "A web app file: its scripts, styles and vendored socket.io-client"
        if path == "/web"
        else "A Swagger UI file (served locally, no CDN)",
        "tags": ["system"],
        "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The file", "content": {"*/*": {}}},
            # aiohttp's file responses answer these themselves, without a body.
            "403": {"description": "Not a file"},
            "404": {"description": "No such file"},
        },
    }


def _socket_io(method: str) -> dict[str, Any]:
    """The Engine.IO endpoint under Socket.IO: a wire protocol (docs/events.md), not REST operations."""
    return {
        "operationId": f"{method.lower()}_socket_io",
        "summary": "Socket.IO (Engine.IO v4 long-polling; websockets upgrade here too). See docs/events.md",
        "tags": ["realtime"],
        "responses": {
            "200": {"description": "Engine.IO packets", "content": {"text/plain": {}}},
            "400": {
                "description": "Not an Engine.IO v4 request, or an unknown session",
                "content": {"application/json": {}},
            },
        },
    }


def _fill_settings(node: Any, settings: Any) -> None:
    """Replace every MAX_LENGTH_SETTING marker with the setting's value as maxLength."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            setting = item.pop(MAX_LENGTH_SETTING, None)
            if setting is not None:
                item["maxLength"] = min(item.get("maxLength", 2**63), getattr(settings, setting))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def build_openapi(app: web.Application, *, version: str) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        path = route.resource.canonical
        endpoint: Endpoint | None = getattr(route.handler, "__endpoint__", None)
        if endpoint is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, endpoint, components)
        elif isinstance(route.resource, web.StaticResource):
            paths.setdefault(f"{path}/{{filename}}", {})["get"] = _static(path)
        elif path.startswith("/socket.io"):
            for m in ("GET", "POST") if method == "*" else (method,):
                paths.setdefault(path, {})[m.lower()] = _socket_io(m)
        else:
            raise RuntimeError(f"route {method} {path} is not declared with handlers.api.Api.route")
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Parlor", "version": version, "description": _DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
    _fill_settings(document, app[SETTINGS])
    return document
