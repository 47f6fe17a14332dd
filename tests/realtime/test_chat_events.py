"""Chat over sockets (issue 3, checks 1-4 and 6): ordered durable messages, dedupe, multi-device,
sync after reconnect, ownership, bad payloads."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import socketio
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.helpers import Inbox, bearer, connect_socket, make_chat, make_persona, register, settled_rows, wait_until


def _send(session_id: str, content: str, client_id: str | None = None) -> dict[str, Any]:
    return {"session_id": session_id, "client_id": client_id or str(uuid.uuid4()), "content": content}


async def test_200_concurrent_sends_from_4_sockets(client: TestClient, settings: Settings, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    devices = [await connect_socket(client, user["access_token"]) for _ in range(4)]
    sockets.extend(devices)
    inboxes = [Inbox(d, "message:new") for d in devices]
    # Two devices also watch the chat room: they must still get each message once, not twice.
    for device in devices[:2]:
        assert (await device.call("chat:join", {"session_id": chat["id"]}))["ok"]

    async def fire(device: Any, n: int) -> list[dict[str, Any]]:
        calls = [device.call("message:send", _send(chat["id"], f"m{n}-{i}"), timeout=30) for i in range(50)]
        return list(await asyncio.gather(*calls))

    acks = [a for batch in await asyncio.gather(*(fire(d, n) for n, d in enumerate(devices))) for a in batch]
    assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
    ack_seqs = sorted(a["message"]["seq"] for a in acks)
    assert len(set(ack_seqs)) == 200

    # The session's seqs are gap-free from 1; the AI replies (demo provider) share the sequence.
    rows = await settled_rows(settings.database_url, chat["id"])
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["seq"] for r in rows if r["role"] == "user"] == ack_seqs

    await wait_until(lambda: all(len(i["message:new"]) >= 200 for i in inboxes))
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind
    stored_ids = {a["message"]["id"] for a in acks}
    for inbox in inboxes:
        received = [e["message"]["id"] for e in inbox["message:new"]]
        assert len(received) == 200 and set(received) == stored_ids


async def test_same_client_id_stores_once_socket_and_rest(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    device = await connect_socket(client, user["access_token"])
    sockets.append(device)
    inbox = Inbox(device, "message:new")
    payload = _send(chat["id"], "hello once")
    first = await device.call("message:send", payload)
    second = await device.call("message:send", payload)
    assert first["ok"] and second["ok"]
    assert first["duplicate"] is False and second["duplicate"] is True
    assert first["message"]["id"] == second["message"]["id"] and first["message"]["seq"] == second["message"]["seq"]

    rest = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": payload["client_id"], "content": "hello once"},
        headers=bearer(user),
    )
    assert rest.status == 200
    assert (await rest.json())["id"] == first["message"]["id"]

    # REST first, then the socket retry.
    other = str(uuid.uuid4())
    created = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": other, "content": "via rest"},
        headers=bearer(user),
    )
    assert created.status == 201
    retry = await device.call("message:send", _send(chat["id"], "via rest", other))
    assert retry["duplicate"] is True and retry["message"]["id"] == (await created.json())["id"]

    history = await (await client.get(f"/api/v1/chat/sessions/{chat['id']}/messages", headers=bearer(user))).json()
    assert [m["content"] for m in history["items"] if m["role"] == "user"] == ["hello once", "via rest"]
    await wait_until(lambda: len(inbox["message:new"]) >= 2)
    await asyncio.sleep(0.2)
    assert len(inbox["message:new"]) == 2  # duplicates triggered nothing


async def test_concurrent_retries_of_one_client_id_store_once(
    client: TestClient, settings: Settings, sockets: list[Any]
) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    device = await connect_socket(client, user["access_token"])
    sockets.append(device)
    payload = _send(chat["id"], "racing retry")
    acks = await asyncio.gather(*(device.call("message:send", payload) for _ in range(10)))
    assert len({a["message"]["id"] for a in acks}) == 1
    assert sum(1 for a in acks if not a["duplicate"]) == 1
    nxt = await device.call("message:send", _send(chat["id"], "next"))
    assert nxt["ok"]
    # The losers' seq increments were rolled back: no gap, one "racing retry".
    rows = await settled_rows(settings.database_url, chat["id"])
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["content"] for r in rows if r["role"] == "user"] == ["racing retry", "next"]


async def test_reconnect_and_sync_gives_exact_history(
    client: TestClient, settings: Settings, sockets: list[Any]
) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    phone = await connect_socket(client, user["access_token"])
    laptop = await connect_socket(client, user["access_token"])
    sockets.extend([phone, laptop])
    for i in range(3):
        await phone.call("message:send", _send(chat["id"], f"before {i}"))
    seen = max(r["seq"] for r in await settled_rows(settings.database_url, chat["id"]))
    await phone.disconnect()

    for i in range(50):
        ack = await laptop.call("message:send", _send(chat["id"], f"while away {i}"))
        assert ack["ok"]
    server_history = await settled_rows(settings.database_url, chat["id"])

    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    collected: list[dict[str, Any]] = []
    after = seen
    while True:
        ack = await phone.call("sync", {"session_id": chat["id"], "after_seq": after})
        assert ack["ok"]
        collected += ack["messages"]
        if not ack["has_more"]:
            break
        after = ack["messages"][-1]["seq"]
    # Exactly the server's history after what the phone had: nothing missing, nothing twice.
    expected = [r for r in server_history if r["seq"] > seen]
    assert [(m["id"], m["seq"], m["content"]) for m in collected] == [
        (r["id"], r["seq"], r["content"]) for r in expected
    ]
    assert sum(1 for m in collected if m["role"] == "user") == 50
    assert ack["last_seq"] == server_history[-1]["seq"] and ack["streams"] == []


async def test_other_user_cannot_touch_my_session(client: TestClient, settings: Settings, sockets: list[Any]) -> None:
    alice = await register(client)
    bob = await register(client)
    chat = await make_chat(client, alice)
    private = await make_persona(client, alice, description="secret")
    await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": str(uuid.uuid4()), "content": "alice only"},
        headers=bearer(alice),
    )
    sid = chat["id"]
    bob_socket = await connect_socket(client, bob["access_token"])
    sockets.append(bob_socket)
    inbox = Inbox(bob_socket, "message:new")

    for event, payload in [
        ("chat:join", {"session_id": sid}),
        ("message:send", _send(sid, "intrusion")),
        ("sync", {"session_id": sid, "after_seq": 0}),
    ]:
        ack = await bob_socket.call(event, payload)
        assert ack == {"ok": False, "error": {"code": "not_found", "message": "chat session not found"}}, event
    typing = await bob_socket.call("typing", {"session_id": sid, "typing": True})
    assert typing["error"]["code"] == "forbidden"

    h = bearer(bob)
    assert (await client.get(f"/api/v1/chat/sessions/{sid}", headers=h)).status == 404
    assert (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=h)).status == 404
    assert (
        await client.post(
            f"/api/v1/chat/sessions/{sid}/messages", json={"client_id": str(uuid.uuid4()), "content": "x"}, headers=h
        )
    ).status == 404
    assert (await client.patch(f"/api/v1/chat/sessions/{sid}", json={"title": "pwned"}, headers=h)).status == 404
    assert (await client.delete(f"/api/v1/chat/sessions/{sid}", headers=h)).status == 404
    assert (await client.get(f"/api/v1/personas/{private['id']}", headers=h)).status == 404
    assert (await client.post("/api/v1/chat/sessions", json={"persona_id": private["id"]}, headers=h)).status == 404

    # Alice's chat is exactly as it was, and Bob saw none of it.
    mine = await (await client.get(f"/api/v1/chat/sessions/{sid}", headers=bearer(alice))).json()
    assert mine["title"] == chat["title"]
    history = await (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=bearer(alice))).json()
    assert [m["content"] for m in history["items"] if m["role"] == "user"] == ["alice only"]
    assert mine["last_seq"] == history["items"][-1]["seq"]
    assert inbox["message:new"] == []


async def test_bad_payloads_get_error_acks_and_server_keeps_serving(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    bad = await connect_socket(client, user["access_token"])
    good = await connect_socket(client, user["access_token"])
    sockets.extend([bad, good])
    sid = chat["id"]
    cases: list[tuple[str, Any, str]] = [
        ("message:send", {"session_id": sid, "content": "no client id"}, "client_id"),
        ("message:send", {"session_id": sid, "client_id": "not-a-uuid", "content": "x"}, "client_id"),
        ("message:send", {"session_id": sid, "client_id": str(uuid.uuid4()), "content": 42}, "content"),
        ("message:send", {"session_id": sid, "client_id": str(uuid.uuid4()), "content": "x" * 1_000_000}, "content"),
        ("message:send", {"session_id": sid, "client_id": str(uuid.uuid4()), "content": "x", "extra": 1}, "extra"),
        ("message:send", {"session_id": sid, "client_id": str(uuid.uuid4()), "content": "nul\x00"}, "content"),
        ("message:send", "just a string", "payload"),
        ("message:send", None, "payload"),
        ("sync", {"session_id": sid, "after_seq": -1}, "after_seq"),
        ("sync", {"session_id": sid, "after_seq": "ten"}, "after_seq"),
        ("chat:join", {}, "session_id"),
        ("typing", {"session_id": sid, "typing": "maybe"}, "typing"),
    ]
    for event, payload, field in cases:
        ack = await bad.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid", (event, payload, ack)
        assert ack["error"]["message"].startswith(field), (event, ack)
    unknown = await bad.call("message:send", _send(str(uuid.uuid4()), "nowhere"))
    assert unknown["error"]["code"] == "not_found"
    nonsense = await bad.call("no:such:event", {"a": 1})
    assert nonsense == {"ok": False, "error": {"code": "unknown_event", "message": "unknown event 'no:such:event'"}}

    assert bad.connected and good.connected
    ack = await good.call("message:send", _send(sid, "still fine"))
    assert ack["ok"] and ack["message"]["content"] == "still fine"


async def test_typing_relayed_to_other_watchers_not_stored(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    one = await connect_socket(client, user["access_token"])
    two = await connect_socket(client, user["access_token"])
    sockets.extend([one, two])
    inbox_one, inbox_two = Inbox(one, "typing"), Inbox(two, "typing")
    for s in (one, two):
        await s.call("chat:join", {"session_id": chat["id"]})
    assert (await one.call("typing", {"session_id": chat["id"], "typing": True}))["ok"]
    await wait_until(lambda: len(inbox_two["typing"]) == 1)
    assert inbox_two["typing"][0] == {"session_id": chat["id"], "user_id": user["user"]["id"], "typing": True}
    assert inbox_one["typing"] == []
    assert (await one.call("chat:leave", {"session_id": chat["id"]}))["ok"]
    assert (await one.call("typing", {"session_id": chat["id"], "typing": False}))["error"]["code"] == "forbidden"


async def test_presence_online_offline_across_devices(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    first = await connect_socket(client, user["access_token"])
    sockets.append(first)
    inbox = Inbox(first, "presence")
    second = await connect_socket(client, user["access_token"])
    await second.disconnect()
    await asyncio.sleep(0.3)
    assert inbox["presence"] == []  # the user stayed online throughout
    watcher = await connect_socket(client, user["access_token"])
    sockets.append(watcher)
    watcher_inbox = Inbox(watcher, "presence")
    await first.disconnect()
    await watcher.disconnect()
    await asyncio.sleep(0.2)
    assert watcher_inbox["presence"] == []
    again = socketio.AsyncClient(reconnection=False)
    again_inbox = Inbox(again, "presence")
    await connect_socket(client, user["access_token"], sio=again)
    sockets.append(again)
    await wait_until(lambda: len(again_inbox["presence"]) == 1)
    assert again_inbox["presence"] == [{"user_id": user["user"]["id"], "online": True}]


async def test_send_rate_limit_per_user(aiohttp_client: Any, settings: Settings, sockets: list[Any]) -> None:
    from server.app import create_app

    limited = settings.model_copy(update={"send_rate_per_minute": 3, "redis_prefix": settings.redis_prefix + "-s"})
    client = await aiohttp_client(create_app(limited))
    user = await register(client)
    chat = await make_chat(client, user)
    device = await connect_socket(client, user["access_token"])
    sockets.append(device)
    acks = [await device.call("message:send", _send(chat["id"], f"m{i}")) for i in range(4)]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[3]["error"]["code"] == "rate_limited"
    rest = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": str(uuid.uuid4()), "content": "x"},
        headers=bearer(user),
    )
    assert rest.status == 429 and int(rest.headers["Retry-After"]) >= 1
    # A retry of a stored message is not a new send: it is answered even when limited.
    retry = await device.call("message:send", _send(chat["id"], "m0", acks[0]["message"]["client_id"]))
    assert retry["ok"] and retry["duplicate"]
