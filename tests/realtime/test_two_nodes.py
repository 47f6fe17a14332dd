"""Two server instances sharing PostgreSQL and Redis act as one: events cross nodes exactly once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import socketio

from server.app import create_app
from server.config import Settings
from tests.helpers import Inbox, bearer, connect_socket, make_chat, register


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
