"""Conversation controls (issue 15): the greeting as the first message, edit, delete (tombstones), rewind
(a streaming reply stopped first), fork, and sync by rev that leaves a second device with exactly the
server's conversation; other users' ids are not found."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, bearer, connect_socket, make_chat, make_persona, register, wait_until
from tests.realtime.test_ai_replies import ai_settings


def _send(session_id: str, content: str) -> dict[str, Any]:
    return {"session_id": session_id, "client_id": str(uuid.uuid4()), "content": content}


async def history(client: TestClient, session: dict[str, Any], chat_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/chat/sessions/{chat_id}/messages?limit=200", headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def settled(client: TestClient, session: dict[str, Any], chat_id: str) -> list[dict[str, Any]]:
    """The history once no reply streams and the newest live user message is answered."""
    for _ in range(500):
        rows = await history(client, session, chat_id)
        live = [r for r in rows if r["status"] != "deleted"]
        if not any(r["status"] == "streaming" for r in rows) and (not live or live[-1]["role"] == "assistant"):
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError("the chat did not settle")


async def test_a_new_chat_opens_with_the_greeting(client: TestClient) -> None:
    user = await register(client)
    persona = await make_persona(client, user, name="Mira", greeting="Hello {{user}}, I am {{char}}.")
    resp = await client.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(user))
    assert resp.status == 201
    chat = await resp.json()
    assert chat["last_seq"] == 1 and chat["last_rev"] == 1
    (greeting,) = await history(client, user, chat["id"])
    name = user["user"]["display_name"]
    assert greeting["seq"] == 1 and greeting["kind"] == "greeting" and greeting["role"] == "assistant"
    assert greeting["content"] == f"Hello {name}, I am Mira."
    assert greeting["variant"] == 0 and [v["content"] for v in greeting["variants"]] == [greeting["content"]]
    plain = await make_chat(client, user)  # no greeting: an empty chat
    assert plain["last_seq"] == 0 and await history(client, user, plain["id"]) == []


async def test_edit_delete_and_sync_by_rev_leave_a_second_device_exact(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user, greeting="Hi {{user}}!")
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    watcher = await connect_socket(client, user["access_token"])  # connected throughout
    sockets.append(watcher)
    watched = Inbox(watcher, "message:updated")
    for text in ("one", "two", "three"):
        assert (await phone.call("message:send", _send(chat["id"], text), timeout=10))["ok"]
        await settled(client, user, chat["id"])
    before = await history(client, user, chat["id"])
    seen_rev = max(m["rev"] for m in before)

    tablet = await connect_socket(client, user["access_token"])  # goes away during the changes
    await tablet.disconnect()
    users_messages = [m for m in before if m["role"] == "user"]
    edited = await phone.call("message:edit", {"message_id": users_messages[0]["id"], "content": "ONE"})
    assert edited["ok"], edited
    assert edited["message"]["content"] == "ONE" and edited["message"]["edited_at"] is not None
    assert edited["message"]["rev"] > seen_rev and edited["message"]["seq"] == users_messages[0]["seq"]
    deleted = await phone.call("message:delete", {"message_id": users_messages[1]["id"]})
    assert deleted["ok"] and deleted["message"]["status"] == "deleted" and deleted["message"]["content"] == ""
    again = await phone.call("message:delete", {"message_id": users_messages[1]["id"]})
    assert again["message"]["rev"] == deleted["message"]["rev"]  # no change, no new rev
    reply = next(m for m in before if m["role"] == "assistant" and m["kind"] == "message")
    resp = await client.patch(
        f"/api/v1/chat/sessions/{chat['id']}/messages/{reply['id']}",
        json={"content": "edited reply"},
        headers=bearer(user),
    )
    assert resp.status == 200 and (await resp.json())["variants"][0]["content"] == "edited reply"

    now = await history(client, user, chat["id"])
    assert [m["seq"] for m in now] == list(range(1, len(now) + 1))  # gap-free, tombstone included
    tablet = await connect_socket(client, user["access_token"])
    sockets.append(tablet)
    synced = await tablet.call("sync", {"session_id": chat["id"], "after_rev": seen_rev})
    assert synced["ok"] and synced["last_rev"] == max(m["rev"] for m in now)
    view = {m["id"]: m for m in before}
    for message in synced["messages"]:
        view[message["id"]] = message
    assert sorted(view.values(), key=lambda m: m["seq"]) == now  # field by field
    await wait_until(lambda: len(watched["message:updated"]) == 3)
    assert [e["message"]["id"] for e in watched["message:updated"]] == [
        users_messages[0]["id"],
        users_messages[1]["id"],
        reply["id"],
    ]
    bad = await tablet.call("sync", {"session_id": chat["id"], "after_rev": 1, "after_seq": 1})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid"


async def test_rewind_stops_the_streaming_reply_and_keeps_seqs(
    aiohttp_client: Any, settings: Settings, sockets: list[Any]
) -> None:
    client = await aiohttp_client(create_app(settings.model_copy(update={"demo_token_delay_ms": 200})))
    user = await register(client)
    chat = await make_chat(client, user)
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    inbox = Inbox(phone, "ai:start", "ai:done", "message:updated")
    assert (await phone.call("chat:join", {"session_id": chat["id"]}))["ok"]
    assert (await phone.call("message:send", _send(chat["id"], "first")))["ok"]  # seq 1, its reply seq 2
    await wait_until(lambda: len(inbox["ai:done"]) == 1, 30)
    assert (await phone.call("message:send", _send(chat["id"], "second")))["ok"]  # seq 3, reply 4 streaming
    await wait_until(lambda: len(inbox["ai:start"]) == 2, 10)
    rewound = await phone.call("chat:rewind", {"session_id": chat["id"], "to_seq": 2}, timeout=20)
    assert rewound["ok"], rewound
    assert rewound["deleted"] == 2
    # The streaming reply was stopped (and stored) before it became a tombstone.
    assert inbox["ai:done"][-1]["message"]["status"] == "stopped" and len(inbox["ai:done"]) == 2
    rows = await history(client, user, chat["id"])
    assert [(m["seq"], m["status"]) for m in rows] == [(1, "complete"), (2, "complete"), (3, "deleted"), (4, "deleted")]
    assert (await phone.call("message:send", _send(chat["id"], "third")))["ok"]
    rows = await settled(client, user, chat["id"])
    assert [m["seq"] for m in rows] == [1, 2, 3, 4, 5, 6] and rows[4]["content"] == "third"
    stale = await phone.call("chat:rewind", {"session_id": chat["id"], "to_seq": 99})
    assert stale["ok"] is False and stale["error"]["code"] == "invalid"


async def test_fork_copies_the_chat_up_to_a_seq(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user, greeting="Welcome.")
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    for text in ("a", "b"):
        assert (await phone.call("message:send", _send(chat["id"], text)))["ok"]
        await settled(client, user, chat["id"])
    original = await history(client, user, chat["id"])
    resp = await client.post(f"/api/v1/chat/sessions/{chat['id']}/fork", json={"at_seq": 3}, headers=bearer(user))
    assert resp.status == 201, await resp.text()
    fork = await resp.json()
    assert fork["id"] != chat["id"] and fork["last_seq"] == 3 and fork["title"].endswith("(fork)")
    copies = await history(client, user, fork["id"])
    assert [m["seq"] for m in copies] == [1, 2, 3]
    assert {m["id"] for m in copies}.isdisjoint(m["id"] for m in original)
    for copy, source in zip(copies, original[:3], strict=True):
        assert (copy["content"], copy["role"], copy["kind"]) == (source["content"], source["role"], source["kind"])
    assert copies[2]["reply_to"] == copies[1]["id"]  # the reply answers the copy, not the original
    assert await history(client, user, chat["id"]) == original
    assert (await phone.call("message:send", _send(fork["id"], "c")))["ok"]
    rows = await settled(client, user, fork["id"])
    assert [m["seq"] for m in rows] == [1, 2, 3, 4, 5]
    bad = await client.post(f"/api/v1/chat/sessions/{chat['id']}/fork", json={"at_seq": 99}, headers=bearer(user))
    assert bad.status == 422


async def test_other_users_ids_are_not_found(client: TestClient, sockets: list[Any]) -> None:
    owner, other = await register(client), await register(client)
    chat = await make_chat(client, owner, greeting="Hello.")
    (greeting,) = await history(client, owner, chat["id"])
    intruder = await connect_socket(client, other["access_token"])
    sockets.append(intruder)
    for event, payload in (
        ("message:edit", {"message_id": greeting["id"], "content": "mine now"}),
        ("message:delete", {"message_id": greeting["id"]}),
        ("chat:rewind", {"session_id": chat["id"], "to_seq": 0}),
        ("sync", {"session_id": chat["id"], "after_rev": 0}),
    ):
        ack = await intruder.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "not_found", (event, ack)
    base = f"/api/v1/chat/sessions/{chat['id']}"
    for method, path, body in (
        ("PATCH", f"{base}/messages/{greeting['id']}", {"content": "x"}),
        ("DELETE", f"{base}/messages/{greeting['id']}", None),
        ("POST", f"{base}/rewind", {"to_seq": 0}),
        ("POST", f"{base}/fork", {"at_seq": 1}),
    ):
        resp = await client.request(method, path, json=body, headers=bearer(other))
        assert resp.status == 404, (method, path, await resp.text())
    # A message of one of my chats named under another of my chats is not found either.
    mine = await make_chat(client, owner)
    resp = await client.delete(f"/api/v1/chat/sessions/{mine['id']}/messages/{greeting['id']}", headers=bearer(owner))
    assert resp.status == 404
    assert await history(client, owner, chat["id"]) == [greeting]


async def test_a_greeting_with_alternates_has_them_as_variants(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    persona = await make_persona(
        client,
        user,
        name="Mira",
        greeting="Hello {{user}}.",
        alternate_greetings=["Hi again, {{user}}. I am {{char}}.", "<BOT> waves at <USER>."],
    )
    resp = await client.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(user))
    chat = await resp.json()
    (greeting,) = await history(client, user, chat["id"])
    name = user["user"]["display_name"]
    expected = [f"Hello {name}.", f"Hi again, {name}. I am Mira.", f"Mira waves at {name}."]
    assert [v["content"] for v in greeting["variants"]] == expected
    assert [v["index"] for v in greeting["variants"]] == [0, 1, 2]
    assert greeting["variant"] == 0 and greeting["content"] == expected[0] and greeting["seq"] == 1
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    inbox = Inbox(phone, "message:updated")
    picked = await phone.call("message:select", {"message_id": greeting["id"], "variant": 2})
    assert picked["ok"], picked
    assert picked["message"]["variant"] == 2 and picked["message"]["content"] == expected[2]
    assert picked["message"]["rev"] > greeting["rev"]
    await wait_until(lambda: len(inbox["message:updated"]) == 1)
    missing = await phone.call("message:select", {"message_id": greeting["id"], "variant": 3})
    assert missing["ok"] is False and missing["error"]["code"] == "invalid"
    resp = await client.patch(
        f"/api/v1/chat/sessions/{chat['id']}/messages/{greeting['id']}", json={"variant": 1}, headers=bearer(user)
    )
    assert resp.status == 200 and (await resp.json())["content"] == expected[1]
    empty = await client.patch(
        f"/api/v1/chat/sessions/{chat['id']}/messages/{greeting['id']}", json={}, headers=bearer(user)
    )
    assert empty.status == 422


async def test_the_prompt_sees_only_the_selected_greeting(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    user = await register(client)
    persona = await make_persona(
        client, user, name="Mira", greeting="First opening line.", alternate_greetings=["Second opening line."]
    )
    resp = await client.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(user))
    chat = await resp.json()
    (greeting,) = await history(client, user, chat["id"])
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    assert (await phone.call("message:select", {"message_id": greeting["id"], "variant": 1}))["ok"]
    gemini.then(Behaviour(tokens=["ok"]))
    assert (await phone.call("message:send", _send(chat["id"], "hello")))["ok"]
    await settled(client, user, chat["id"])
    system = gemini.calls[0].body["systemInstruction"]["parts"][0]["text"]
    assert "Second opening line." in system and "First opening line." not in system
    assert gemini.calls[0].body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
