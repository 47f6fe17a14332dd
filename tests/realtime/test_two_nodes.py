"""Two server instances sharing PostgreSQL and Redis act as one: events cross nodes exactly once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import socketio

from server.app import create_app
from server.config import Settings
from tests.helpers import Inbox, bearer, connect_socket, make_chat, make_plain_chat, register, wait_until


async def test_message_sent_on_node_b_reaches_socket_on_node_a_once(
    aiohttp_client: Any, settings: Settings, sockets: list[Any]
) -> None:
    node_a = await aiohttp_client(create_app(settings))
    node_b = await aiohttp_client(create_app(settings))
    user = await register(node_a)
    chat = await make_chat(node_b, user)

    phone = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(phone, "message:new", "presence")
    await connect_socket(node_a, user["access_token"], sio=phone)
    sockets.append(phone)
    assert (await phone.call("chat:join", {"session_id": chat["id"]}))["ok"]

    resp = await node_b.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": str(uuid.uuid4()), "content": "from node b"},
        headers=bearer(user),
    )
    assert resp.status == 201
    for _ in range(250):
        if inbox["message:new"]:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert [e["message"]["content"] for e in inbox["message:new"]] == ["from node b"]

    # Presence counts sockets on both nodes: a second device on node B does not re-announce "online".
    laptop = await connect_socket(node_b, user["access_token"])
    sockets.append(laptop)
    await laptop.disconnect()
    await asyncio.sleep(0.3)
    assert inbox["presence"] == [{"user_id": user["user"]["id"], "online": True}]


async def test_a_burst_of_sends_on_one_node_reaches_the_other_once_each_in_seq_order(
    aiohttp_client: Any, settings: Settings, sockets: list[Any]
) -> None:
    """Emits waiting at the same moment share one pipelined publish (realtime/server.py): none is
    lost or doubled, and a session's messages arrive in seq order."""
    node_a = await aiohttp_client(create_app(settings))
    node_b = await aiohttp_client(create_app(settings))
    user = await register(node_a)
    chat = await make_plain_chat(node_a, user)
    watcher = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(watcher, "message:new")
    await connect_socket(node_b, user["access_token"], sio=watcher)
    sockets.append(watcher)
    senders = [await connect_socket(node_a, user["access_token"]) for _ in range(5)]
    sockets.extend(senders)

    async def send(sender: socketio.AsyncClient, i: int) -> int:
        payload = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": f"b{i}"}
        ack = await sender.call("message:send", payload, timeout=10)
        assert ack["ok"], ack
        return int(ack["message"]["seq"])

    seqs = await asyncio.gather(*(send(senders[i % 5], i) for i in range(100)))
    assert sorted(seqs) == list(range(1, 101))
    await wait_until(lambda: len(inbox["message:new"]) >= 100)
    await asyncio.sleep(0.3)  # a duplicate would arrive right behind
    got = [e["message"]["seq"] for e in inbox["message:new"]]
    assert got == list(range(1, 101))
