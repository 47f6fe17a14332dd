"""Builds the OpenAPI 3.1 document from the app's router and the endpoints' pydantic schemas."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from handlers.api import Endpoint

_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    400: "Malformed request",
    401: "Not signed in, or the token is bad",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    422: "Invalid field (named in the error)",
    429: "Rate limited (see Retry-After)",
    503: "A dependency is unavailable",
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


def _schema(tp: Any, components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    name = getattr(tp, "__name__", None)
    if name and schema.get("type") == "object" and isinstance(tp, type):
        components[name] = schema
        return {"$ref": _REF.format(model=name)}
    return schema


def _parameters(path: str, endpoint: Endpoint | None, components: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            params.append({"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}})
    if endpoint is not None and endpoint.query is not None:
        schema = endpoint.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _operation(method: str, path: str, handler: Any, components: dict[str, Any]) -> dict[str, Any]:
    endpoint: Endpoint | None = getattr(handler, "__endpoint__", None)
    doc = (handler.__doc__ or "").strip()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    op: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}"}
    if endpoint is None:
        op["summary"] = doc.splitlines()[0] if doc else path
        op["tags"] = ["system"]
        op["responses"] = {"200": {"description": "OK"}}
    else:
        op["summary"] = endpoint.summary
        if doc:
            op["description"] = doc
        op["tags"] = [endpoint.tag]
        if endpoint.auth:
            op["security"] = [{"bearerAuth": []}]
        if endpoint.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(endpoint.body, components, "validation")}},
            }
        responses: dict[str, Any] = {}
        if endpoint.status == 204 or (endpoint.response is None and endpoint.content_type == "application/json"):
            responses[str(endpoint.status)] = {"description": "Done"}
        else:
            content_schema = (
                _schema(endpoint.response, components, "serialization") if endpoint.response is not None else {}
            )
            responses[str(endpoint.status)] = {
                "description": "OK",
                "content": {endpoint.content_type: {"schema": content_schema}},
            }
        statuses = set(endpoint.errors)
        if endpoint.body is not None or endpoint.query is not None:
            statuses |= {400, 413, 422}
        if endpoint.auth:
            statuses |= {401, 403}
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
            }
        op["responses"] = responses
    params = _parameters(path, endpoint, components)
    if params:
        op["parameters"] = params
    return op


def build_openapi(app: web.Application, *, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        path = route.resource.canonical
        handler = route.handler
        methods = ["GET", "POST"] if method == "*" else [method]
        for m in methods:
            paths.setdefault(path, {})[m.lower()] = _operation(m, path, handler, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parlor",
            "version": version,
            "description": "Realtime server for AI persona chat apps. Socket events: see docs/events.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
