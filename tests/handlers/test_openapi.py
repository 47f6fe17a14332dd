"""The OpenAPI document says what the server does (issue 11, defect 16): one schema per component name,
the shapes endpoints really return, UUID path ids, limits from the settings, every status answered."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from handlers import openapi as openapi_module
from handlers.api import Api
from handlers.keys import SETTINGS
from server.app import create_app
from server.config import Settings
from tests.helpers import bearer, make_chat, register


async def _doc(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    return dict(await resp.json())


def _schema(doc: dict[str, Any], ref_holder: dict[str, Any]) -> dict[str, Any]:
    ref = ref_holder["$ref"]
    return dict(doc["components"]["schemas"][ref.rsplit("/", 1)[1]])


def _response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    content = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
    return _schema(doc, content["schema"])


async def test_auth_answers_are_documented_as_tokens_not_chat_sessions(client: TestClient) -> None:
    doc = await _doc(client)
    for path, status in [("register", "201"), ("login", "200"), ("refresh", "200"), ("password", "200")]:
        schema = _response_schema(doc, f"/api/v1/auth/{path}", "post", status)
        assert {"user", "access_token", "refresh_token", "expires_in"} <= set(schema["required"]), path
    chat = _response_schema(doc, "/api/v1/chat/sessions", "post", "201")
    assert {"id", "persona_id", "title", "pinned", "last_seq"} <= set(chat["required"])


async def test_admin_plan_grant_is_not_documented_as_a_catalogue_plan(client: TestClient) -> None:
    doc = await _doc(client)
    grant = _response_schema(doc, "/api/v1/admin/users/{id}/plan", "post", "200")
    assert set(grant["properties"]) == {"user_id", "plan"}
    catalogue = _response_schema(doc, "/api/v1/subscription/plans", "get", "200")
    plan = _schema(doc, catalogue["properties"]["items"]["items"])
    assert {"name", "limits", "prices"} <= set(plan["properties"])


def test_two_schemas_under_one_name_fail_the_build(settings: Settings) -> None:
    from handlers.api import register_apis

    def models() -> tuple[type[BaseModel], type[BaseModel]]:
        class Out(BaseModel):
            a: int

        first = Out

        class Out(BaseModel):  # type: ignore[no-redef]
            b: str

        return first, Out

    first, second = models()
    api = Api("test")

    @api.route("GET", "/one", summary="one", response=first, auth=False)
    async def one(request: web.Request) -> dict[str, Any]:
        return {"a": 1}

    @api.route("GET", "/two", summary="two", response=second, auth=False)
    async def two(request: web.Request) -> dict[str, Any]:
        return {"b": "x"}

    app = web.Application()
    app[SETTINGS] = settings
    register_apis(app, [api], json_max_bytes=1024)
    with pytest.raises(openapi_module.DuplicateSchemaName, match="'Out'"):
        openapi_module.build_openapi(app, version="test")


async def test_path_ids_are_documented_as_uuids(client: TestClient) -> None:
    doc = await _doc(client)
    checked = 0
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in ("id", "entry_id", "stream_id"):
                    assert param["schema"] == {"type": "string", "format": "uuid"}, (path, param)
                    assert "422" in op["responses"], path
                    checked += 1
    assert checked > 20


async def test_message_content_limit_is_the_configured_one(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.model_copy(update={"message_max_chars": 1234})))
    doc = await _doc(client)
    for name in ("SendIn", "ChatIn"):
        content = doc["components"]["schemas"][name]["properties"]["content"]
        assert content["maxLength"] == 1234, (name, content)
        assert not any(key.startswith("x-") for key in content), content
    user = await register(client)
    chat = await make_chat(client, user)
    body = {"client_id": "5f211aa2-fc28-40d5-965b-df5c6ff23def", "content": "x" * 1235}
    resp = await client.post(f"/api/v1/chat/sessions/{chat['id']}/messages", json=body, headers=bearer(user))
    assert resp.status == 422


async def test_every_status_an_endpoint_answers_is_documented(client: TestClient) -> None:
    doc = await _doc(client)
    paths = doc["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # Authenticated: no token (401), banned (403), database down (503).
    assert {"401", "403", "503"} <= statuses("/api/v1/auth/me", "get")
    # A body: malformed JSON (400), too large (413), invalid (422).
    assert {"400", "413", "422"} <= statuses("/api/v1/personas", "post")
    # A query: invalid (422) -- not 400 or 413, which a query cannot cause.
    assert statuses("/api/v1/credits/ledger", "get") == {"200", "401", "403", "422", "503"}
    # Sending again with a known client_id answers the stored message with 200, a new one 201.
    assert {"200", "201"} <= statuses("/api/v1/chat/sessions/{id}/messages", "post")
    # Public endpoints that read only configuration answer nothing else.
    assert statuses("/healthz", "get") == {"200"}
    assert statuses("/api/v1/subscription/plans", "get") == {"200"}
    # /readyz answers 503 with its own body, not an error.
    ready = paths["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready["$ref"].endswith("/Readiness")
    # Deleting answers 204 without a body.
    assert paths["/api/v1/personas/{id}"]["delete"]["responses"]["204"] == {"description": "Done"}
    # Uploads document their multipart bodies; exports their other media types.
    knowledge = paths["/api/v1/personas/{id}/knowledge"]["post"]["requestBody"]["content"]
    assert set(knowledge) == {"application/json", "multipart/form-data"}
    export = paths["/api/v1/personas/{id}/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "image/png"}
    usage = paths["/api/v1/usage/export"]["post"]["responses"]["200"]["content"]
    assert set(usage) == {"text/csv", "application/json"}


async def test_query_parameters_are_bounded_and_not_nullable(client: TestClient) -> None:
    doc = await _doc(client)
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/chat/sessions/{id}/messages"]["get"]["parameters"]}
    assert params["after_seq"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, **_desc(params["after_seq"])}
    assert params["before_seq"]["minimum"] == 1 and params["before_seq"]["maximum"] == 2**63 - 1
    # Every list's cursor is the opaque string of core.pages, bounded, never null.
    for path, operation in ((p, o) for p, ops in doc["paths"].items() for o in ops.values()):
        cursor = {q["name"]: q["schema"] for q in operation.get("parameters", [])}.get("cursor")
        if cursor is not None:
            assert cursor["type"] == "string" and cursor["maxLength"] <= 512, path
            assert "anyOf" not in cursor, path


def _desc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": schema["description"]} if "description" in schema else {}


async def test_partial_updates_do_not_document_null(client: TestClient) -> None:
    doc = await _doc(client)
    patch = doc["components"]["schemas"]["PersonaPatch"]["properties"]
    # avatar_file_id alone takes null: it removes the avatar.
    kept = {name: prop for name, prop in patch.items() if name != "avatar_file_id"}
    assert all("anyOf" not in prop and prop.get("type") != "null" for prop in kept.values()), patch
    assert {"type": "null"} in patch["avatar_file_id"]["anyOf"] and "default" not in patch["avatar_file_id"]
    user = await register(client)
    persona = (await (await client.post("/api/v1/personas", json={"name": "P"}, headers=bearer(user))).json())["id"]
    resp = await client.put(f"/api/v1/personas/{persona}", json={"name": None}, headers=bearer(user))
    assert resp.status == 422


async def test_body_types_are_json_types(client: TestClient) -> None:
    """What the document calls a boolean or an integer must be one: no 0 for false, no "5" for 5."""
    user = await register(client)
    chat = await make_chat(client, user)
    url = f"/api/v1/chat/sessions/{chat['id']}"
    for bad in ({"pinned": 0}, {"pinned": "true"}, {"title": 5}):
        resp = await client.patch(url, json=bad, headers=bearer(user))
        assert resp.status == 422, (bad, await resp.text())
    resp = await client.post("/api/v1/usage/export", json={"format": "json", "days": "5"}, headers=bearer(user))
    assert resp.status == 422
    # 5.0 is the integer 5 in JSON (and in JSON Schema).
    resp = await client.post("/api/v1/usage/export", json={"format": "json", "days": 5.0}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
