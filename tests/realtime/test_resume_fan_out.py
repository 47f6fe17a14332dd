"""A resumed reply keeps its fan-out (issue 11, defect 1): with two devices of one user in a chat, one
resuming the live reply, both get `ai:done` once, and a message the other device sent during the reply
is answered by the next reply, on one node without Redis and on two nodes behind Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, connect_socket, make_chat, register, wait_until
from tests.realtime.test_ai_replies import AI_EVENTS, ai_settings, send


async def _device(client: TestClient, user: dict[str, Any], chat: dict[str, Any], *, join: bool) -> Any:
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, *AI_EVENTS)
    await connect_socket(client, user["access_token"], sio=sio)
    if join:
        assert (await sio.call("chat:join", {"session_id": chat["id"]}))["ok"]
    return sio, inbox


async def _two_devices_one_resuming(
    node_a: TestClient, node_b: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    tokens = [f"p{i} " for i in range(40)]
    gemini.then(Behaviour(tokens=tokens, delay=0.02), Behaviour(tokens=["second ", "reply"]))
    user = await register(node_a)
    chat = await make_chat(node_a, user)
    phone, phone_inbox = await _device(node_a, user, chat, join=True)
    sockets.append(phone)
    assert (await phone.call("message:send", send(chat, "first question")))["ok"]
    await wait_until(lambda: len(phone_inbox["ai:chunk"]) >= 3)
    stream_id = phone_inbox["ai:start"][0]["stream_id"]

    # The laptop comes in on node B (the same node on the one-node run) and resumes the live reply; a
    # tablet watches the chat on node B too (there, live events arrive through Redis on two nodes).
    laptop, laptop_inbox = await _device(node_b, user, chat, join=False)
    tablet, tablet_inbox = await _device(node_b, user, chat, join=True)
    sockets += [laptop, tablet]
    assert (await laptop.call("ai:resume", {"stream_id": stream_id, "from_index": 0}))["ok"]
    # The phone asks something else while the reply still streams.
    during = await phone.call("message:send", send(chat, "and another thing"))
    assert during["ok"]

    # The next reply answers the message sent meanwhile.
    await wait_until(lambda: len(phone_inbox["ai:done"]) >= 2 and len(tablet_inbox["ai:done"]) >= 2, 15.0)
    await wait_until(lambda: laptop_inbox["ai:done"], 15.0)
    await asyncio.sleep(0.3)
    first_done = [d for d in phone_inbox["ai:done"] if d["stream_id"] == stream_id]
    assert len(first_done) == 1
    for inbox in (laptop_inbox, tablet_inbox):
        assert len([d for d in inbox["ai:done"] if d["stream_id"] == stream_id]) == 1
    second = [d for d in phone_inbox["ai:done"] if d["stream_id"] != stream_id]
    assert len(second) == 1 and second[0]["message"]["content"] == "second reply"
    assert second[0]["message"]["reply_to"] == during["message"]["id"]
    laptop_text = "".join(c["text"] for c in laptop_inbox["ai:chunk"] if c["stream_id"] == stream_id)
    assert laptop_text == "".join(tokens) == first_done[0]["message"]["content"]


async def test_resume_on_one_node_keeps_other_devices_fan_out(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    node = await aiohttp_client(create_app(ai_settings(settings, gemini, redis_url=None)))
    await _two_devices_one_resuming(node, node, gemini, sockets)


async def test_resume_on_two_nodes_keeps_other_devices_fan_out(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    node_a = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    node_b = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    await _two_devices_one_resuming(node_a, node_b, gemini, sockets)
