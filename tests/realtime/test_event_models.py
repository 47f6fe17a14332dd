"""The socket event contract as models (core/events.py): every server event emitted for real validates
against its model and against the AsyncAPI document served at /api/asyncapi.json; the document lists
exactly the events of docs/events.md; tests/helpers.py Inbox fails a test on an event that breaks the
contract. The wire shapes themselves: tests/core/test_wire.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from core.events import CLIENT_EVENTS, SERVER_EVENTS
from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, bearer, connect_socket, make_chat, register, server_url, wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def documented(section: str) -> list[str]:
    """The event names in the first column of a docs/events.md table, under the heading `## {section}`."""
    text = DOCS.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None].split("\n### ")[0]
    return re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE)


async def asyncapi(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/asyncapi.json")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return dict(await resp.json())


def message_names(doc: dict[str, Any], action: str) -> list[str]:
    names = []
    for operation in doc["operations"].values():
        if operation["action"] == action:
            (ref,) = operation["messages"]
            names.append(resolve(doc, ref["$ref"])["name"])
    return names


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(doc, node["$ref"])
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def payload_validator(doc: dict[str, Any], event: str) -> jsonschema.Draft7Validator:
    """The document's schema of a server event's payload, with the document as the root for its refs
    (AsyncAPI 3's default schema format is a superset of JSON Schema draft 07)."""
    (message,) = [
        resolve(doc, op["messages"][0]["$ref"])
        for op in doc["operations"].values()
        if op["action"] == "send" and resolve(doc, op["messages"][0]["$ref"])["name"] == event
    ]
    return jsonschema.Draft7Validator({"components": doc["components"], **message["payload"]})


async def test_the_document_lists_exactly_the_documented_events(client: TestClient) -> None:
    doc = await asyncapi(client)
    assert doc["asyncapi"] == "3.0.0"
    server_table, client_table = documented("Server → client"), documented("Client → server")
    assert len(server_table) >= 12 and len(client_table) >= 7  # the tables were found
    assert sorted(message_names(doc, "send")) == sorted(server_table) == sorted(SERVER_EVENTS)
    assert sorted(message_names(doc, "receive")) == sorted(client_table) == sorted(CLIENT_EVENTS)


async def test_the_document_is_self_consistent(client: TestClient) -> None:
    doc = await asyncapi(client)
    for ref in refs(doc):
        resolve(doc, ref)
    (channel,) = doc["channels"].values()
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        replies = operation.get("reply", {}).get("messages", [])
        for ref in operation["messages"] + replies:  # an operation's messages must be its channel's
            assert ref["$ref"].startswith("#/channels/socket/messages/"), (name, ref)
            assert ref["$ref"].rsplit("/", 1)[1] in channel["messages"], (name, ref)
    for key, message in doc["components"]["messages"].items():
        assert re.fullmatch(r"[A-Za-z0-9.\-_]+", key), key  # component keys
        jsonschema.Draft7Validator.check_schema(resolve(doc, message["payload"]["$ref"]))


async def test_inbox_fails_a_test_on_an_event_that_breaks_the_contract(aiohttp_client: Any) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    stream_id = str(uuid.uuid4())

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.emit("typing", {"session_id": stream_id, "user_id": stream_id, "typing": True}, to=sid)
        await sio.emit("ai:chunk", {"stream_id": stream_id, "index": "3", "text": "x"}, to=sid)  # "3" for 3
        await sio.emit("presence", {"user_id": stream_id, "online": True, "extra": 1}, to=sid)
        await sio.emit("ai:chunk", {"stream_id": stream_id.upper(), "index": 3, "text": "x"}, to=sid)
        await sio.emit("bogus", {"x": 1}, to=sid)  # not named by the inbox: seen by its catch-all

    app = web.Application()
    sio.attach(app)
    server = await aiohttp_client(app)
    received = socketio.AsyncClient(reconnection=False)
    with pytest.raises(AssertionError, match="not server events"):
        Inbox(received, "ai:chunk", "nope")
    inbox = Inbox(received, "ai:chunk", "presence", "typing")
    await received.connect(server_url(server), transports=["websocket"], wait_timeout=5)
    try:
        await wait_until(lambda: len(inbox.problems) >= 4)
        assert inbox.events["typing"] and len(inbox.problems) == 4, inbox.problems
        problems = "\n".join(inbox.problems)
        assert "index" in problems and "extra" in problems and "'bogus' is not a server event" in problems
        assert "not as AiChunkEvent serialises it" in problems  # an upper-case UUID validates, but is not ours
        with pytest.raises(AssertionError, match="break the contract"):
            inbox["typing"]
    finally:
        await received.disconnect()


@pytest.fixture
async def events_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    update = {
        "free_daily_messages": 5,
        "ai_provider": "gemini",
        "gemini_api_key": SecretStr("k"),
        "gemini_base_url": gemini.url,
        "ai_max_attempts": 1,
    }
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


@pytest.fixture
async def admin(events_client: TestClient, settings: Settings) -> AsyncIterator[dict[str, Any]]:
    session = await register(events_client)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(session["user"]["id"]))
    finally:
        await conn.close()
    yield session


async def test_every_server_event_emitted_validates(
    events_client: TestClient, admin: dict[str, Any], gemini: FakeGemini, sockets: list[Any]
) -> None:
    """One user's day that makes the server emit each of its events; both devices check every event they
    receive (Inbox), and each payload validates against the AsyncAPI document too."""
    client = events_client
    user = await register(client)
    chat = await make_chat(client, user)
    phone, laptop = socketio.AsyncClient(reconnection=False), socketio.AsyncClient(reconnection=False)
    phone_inbox, laptop_inbox = Inbox(phone, *SERVER_EVENTS), Inbox(laptop, *SERVER_EVENTS)
    for device in (phone, laptop):
        await connect_socket(client, user["access_token"], sio=device)
        sockets.append(device)
        assert (await device.call("chat:join", {"session_id": chat["id"]}))["ok"]

    assert (await laptop.call("typing", {"session_id": chat["id"], "typing": True}))["ok"]
    gemini.then(Behaviour(tokens=["Hel", "lo"]))
    sent = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "hi"}
    first = await phone.call("message:send", sent)
    assert first["ok"]
    await wait_until(lambda: bool(phone_inbox["ai:done"]))
    gemini.then(Behaviour(status=500))  # the next reply fails: ai:error, and the quota comes back
    assert (await phone.call("message:send", {**sent, "client_id": str(uuid.uuid4())}))["ok"]
    await wait_until(lambda: bool(phone_inbox["ai:error"]))

    target = f"/api/v1/admin/users/{user['user']['id']}"
    grant = {"amount": 3, "idempotency_key": str(uuid.uuid4())}
    assert (await client.post(f"{target}/credits", json=grant, headers=bearer(admin))).status == 200
    assert (await client.post(f"{target}/plan", json={"plan": "premium"}, headers=bearer(admin))).status == 200
    export = {"format": "csv", "async": True}
    assert (await client.post("/api/v1/usage/export", json=export, headers=bearer(user))).status == 202
    await wait_until(lambda: any(e["status"] == "succeeded" for e in phone_inbox["job:progress"]))
    edit = {"message_id": first["message"]["id"], "content": "hi, edited"}
    assert (await laptop.call("message:edit", edit))["ok"]  # message:updated
    assert (await client.delete(f"/api/v1/chat/sessions/{chat['id']}", headers=bearer(user))).status == 204
    assert (await client.post("/api/v1/auth/logout-all", headers=bearer(user))).status == 204

    await wait_until(lambda: all(phone_inbox[name] for name in SERVER_EVENTS))
    phone_inbox.check()
    laptop_inbox.check()
    assert not laptop_inbox["typing"]  # not echoed to its sender
    doc = await asyncapi(client)
    for name in SERVER_EVENTS:
        validator = payload_validator(doc, name)
        for payload in phone_inbox[name] + laptop_inbox[name]:
            validator.validate(payload)
