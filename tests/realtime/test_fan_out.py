"""Room fan-out without a task per recipient (issue 6): every socket of a room gets each event once and
in order, over websocket and long-polling alike; skipped sockets get nothing; a socket whose client
stopped answering pings is closed instead of queued to."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient

from handlers.keys import SIO
from tests.helpers import Inbox, connect_socket, make_plain_chat, register, server_url, wait_until


async def test_room_of_websocket_and_polling_sockets_gets_each_message_once_in_order(
    client: TestClient, sockets: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The library's per-recipient path must not be taken for these events.
    async def per_recipient(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("per-recipient send used")

    monkeypatch.setattr(socketio.AsyncServer, "_send_eio_packet", per_recipient)
    user = await register(client)
    chat = await make_plain_chat(client, user)
    members = [await connect_socket(client, user["access_token"]) for _ in range(20)]
    for _ in range(3):
        polling = socketio.AsyncClient(reconnection=False)
        await polling.connect(
            server_url(client), auth={"token": user["access_token"]}, transports=["polling"], wait_timeout=5
        )
        members.append(polling)
    sockets.extend(members[:20])
    inboxes = [Inbox(m, "message:new") for m in members]
    for m in members[:10]:  # half also in the chat room: still one copy each
        assert (await m.call("chat:join", {"session_id": chat["id"]}))["ok"]

    sender = members[0]
    for i in range(30):
        payload = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": f"n{i}"}
        assert (await sender.call("message:send", payload))["ok"]
    await wait_until(lambda: all(len(i["message:new"]) >= 30 for i in inboxes))
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind
    for inbox in inboxes:
        assert [e["message"]["content"] for e in inbox["message:new"]] == [f"n{i}" for i in range(30)]
    # A polling client's polite disconnect waits out its pending long-poll (up to the ping interval).
    for polling in members[20:]:
        await polling.eio.disconnect(abort=True)


async def test_typing_skips_the_sender_and_a_silent_client_is_closed(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_plain_chat(client, user)
    one, two, three = [await connect_socket(client, user["access_token"]) for _ in range(3)]
    sockets.extend([one, two, three])
    inboxes = [Inbox(s, "typing") for s in (one, two, three)]
    for s in (one, two, three):
        assert (await s.call("chat:join", {"session_id": chat["id"]}))["ok"]
    assert (await one.call("typing", {"session_id": chat["id"], "typing": True}))["ok"]
    await wait_until(lambda: len(inboxes[1]["typing"]) == 1 and len(inboxes[2]["typing"]) == 1)
    assert inboxes[0]["typing"] == []

    # The server last heard from `three` longer ago than the ping timeout: the next emit closes it.
    sio = client.app[SIO]
    eio_sid = sio.manager.eio_sid_from_sid(three.get_sid(), "/")
    socket = sio.eio.sockets[eio_sid]
    socket.last_ping = time.time() - sio.eio.ping_timeout - 5
    assert (await one.call("typing", {"session_id": chat["id"], "typing": False}))["ok"]
    await wait_until(lambda: len(inboxes[1]["typing"]) == 2)
    # As the library does: the socket is closed on the server (disconnect handled, rooms left), and
    # nothing more is queued to it.
    assert socket.closed
    assert not sio.manager.is_connected(three.get_sid(), "/")
    await asyncio.sleep(0.2)
    assert len(inboxes[2]["typing"]) == 1
