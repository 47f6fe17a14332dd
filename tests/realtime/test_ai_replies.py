"""AI replies over sockets with the real google-genai client against tests/fakes/gemini (issue 4,
checks 1-4): chunks equal the stored reply, resume after reconnect (also on another node), stop,
upstream failures, and messages sent while a reply streams."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, connect_socket, make_chat, register

AI_EVENTS = ("ai:start", "ai:chunk", "ai:done", "ai:error", "message:new")


def ai_settings(settings: Settings, gemini: FakeGemini, **extra: Any) -> Settings:
    update = {
        "ai_provider": "gemini",
        "gemini_api_key": SecretStr("test-key"),
        "gemini_base_url": gemini.url,
        "gemini_model": "gemini-test",
        "ai_first_token_timeout_seconds": 2.0,
        "ai_idle_timeout_seconds": 2.0,
        **extra,
    }
    return settings.model_copy(update=update)


@pytest.fixture
async def ai_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    return await aiohttp_client(create_app(ai_settings(settings, gemini)))


async def until(predicate: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def watcher(client: TestClient, user: dict[str, Any], chat: dict[str, Any]) -> tuple[Any, Inbox]:
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, *AI_EVENTS)
    await connect_socket(client, user["access_token"], sio=sio)
    assert (await sio.call("chat:join", {"session_id": chat["id"]}))["ok"]
    return sio, inbox


def send(chat: dict[str, Any], content: str) -> dict[str, Any]:
    return {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": content}


async def stored(settings: Settings, message_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchrow("SELECT * FROM messages WHERE id = $1", uuid.UUID(message_id))
    finally:
        await conn.close()


async def test_chunks_in_order_equal_stored_reply_with_usage(
    ai_client: TestClient, gemini: FakeGemini, settings: Settings, sockets: list[Any]
) -> None:
    tokens = [f"tok{i} " for i in range(40)]
    gemini.then(Behaviour(tokens=tokens, delay=0.005, usage=(123, 40, 163)))
    user = await register(ai_client)
    chat = await make_chat(ai_client, user, personality="You are a pirate.", name="Redbeard")
    sio, inbox = await watcher(ai_client, user, chat)
    sockets.append(sio)
    ack = await sio.call("message:send", send(chat, "Ahoy there"))
    assert ack["ok"]
    await until(lambda: inbox["ai:done"])
    await asyncio.sleep(0.2)  # the client runs handlers as tasks: let the last chunk land
    start, done = inbox["ai:start"][0], inbox["ai:done"][0]
    stream_id = start["stream_id"]
    assert start["session_id"] == chat["id"] and start["reply_to"] == ack["message"]["id"]
    chunks = inbox["ai:chunk"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["stream_id"] == stream_id for c in chunks)
    text = "".join(c["text"] for c in chunks)
    assert text == "".join(tokens)
    assert done["message"]["content"] == text and done["message"]["status"] == "complete"
    assert done["usage"] == {"prompt_tokens": 123, "completion_tokens": 40, "total_tokens": 163}
    row = await stored(settings, stream_id)
    assert row["content"] == text and row["status"] == "complete" and row["role"] == "assistant"
    assert json.loads(row["usage"]) == done["usage"] and row["seq"] == 2
    # The request carried the persona as system instruction and the user's message.
    body = gemini.calls[0].body
    assert "Redbeard" in body["systemInstruction"]["parts"][0]["text"]
    assert "pirate" in body["systemInstruction"]["parts"][0]["text"]
    assert body["contents"][-1] == {"role": "user", "parts": [{"text": "Ahoy there"}]}
    assert gemini.calls[0].api_key == "test-key"
    # Coalescing: 40 tokens 5 ms apart arrive in fewer, larger chunks.
    assert len(chunks) < 40


async def test_resume_after_reconnect_gets_each_missing_chunk_once(
    ai_client: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    tokens = [f"w{i} " for i in range(60)]
    gemini.then(Behaviour(tokens=tokens, delay=0.02))
    user = await register(ai_client)
    chat = await make_chat(ai_client, user)
    sio, inbox = await watcher(ai_client, user, chat)
    await sio.call("message:send", send(chat, "tell me a long story"))
    await until(lambda: len(inbox["ai:chunk"]) >= 5)
    await sio.disconnect()
    seen = len(inbox["ai:chunk"])
    await asyncio.sleep(0.3)  # chunks keep coming while we are away

    back = socketio.AsyncClient(reconnection=False)
    back_inbox = Inbox(back, *AI_EVENTS)
    await connect_socket(ai_client, user["access_token"], sio=back)
    sockets.append(back)
    synced = await back.call("sync", {"session_id": chat["id"], "after_seq": 1})
    assert synced["ok"] and len(synced["streams"]) == 1
    stream = synced["streams"][0]
    assert stream["stream_id"] == inbox["ai:start"][0]["stream_id"]
    assert synced["messages"][0]["status"] == "streaming"
    ack = await back.call("ai:resume", {"stream_id": stream["stream_id"], "from_index": seen})
    assert ack["ok"]
    await until(lambda: back_inbox["ai:done"])
    await asyncio.sleep(0.2)
    resumed = back_inbox["ai:chunk"]
    assert [c["index"] for c in resumed] == list(range(seen, seen + len(resumed)))
    assert len(back_inbox["ai:done"]) == 1
    whole = "".join(c["text"] for c in inbox["ai:chunk"][:seen]) + "".join(c["text"] for c in resumed)
    assert whole == "".join(tokens) == back_inbox["ai:done"][0]["message"]["content"]


async def test_resume_on_another_node_with_redis(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    node_a = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    node_b = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    tokens = [f"n{i} " for i in range(50)]
    gemini.then(Behaviour(tokens=tokens, delay=0.02))
    user = await register(node_a)
    chat = await make_chat(node_a, user)
    sio, inbox = await watcher(node_a, user, chat)
    await sio.call("message:send", send(chat, "runs on node a"))
    await until(lambda: len(inbox["ai:chunk"]) >= 3)
    await sio.disconnect()
    seen = len(inbox["ai:chunk"])

    back = socketio.AsyncClient(reconnection=False)
    back_inbox = Inbox(back, *AI_EVENTS)
    await connect_socket(node_b, user["access_token"], sio=back)
    sockets.append(back)
    synced = await back.call("sync", {"session_id": chat["id"], "after_seq": 0})
    stream_id = synced["streams"][0]["stream_id"]
    # As docs/events.md says: resume first, then join. Joining the room (which gets the live chunks)
    # must not duplicate any. A join before the resume would get live chunks before the replay starts.
    assert (await back.call("ai:resume", {"stream_id": stream_id, "from_index": seen}))["ok"]
    assert (await back.call("chat:join", {"session_id": chat["id"]}))["ok"]
    await until(lambda: back_inbox["ai:done"])
    await asyncio.sleep(0.3)
    indexes = [c["index"] for c in back_inbox["ai:chunk"]]
    assert indexes == list(range(seen, seen + len(indexes)))
    text = "".join(c["text"] for c in inbox["ai:chunk"][:seen]) + "".join(c["text"] for c in back_inbox["ai:chunk"])
    assert text == "".join(tokens)
    assert len(back_inbox["ai:done"]) == 1


async def test_stop_closes_upstream_and_keeps_text_so_far(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    # The reply runs on node A; the stop is sent to node B: it must cross nodes.
    node_a = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    node_b = await aiohttp_client(create_app(ai_settings(settings, gemini)))
    gemini.then(Behaviour(tokens=[f"s{i} " for i in range(200)], delay=0.02))
    user = await register(node_a)
    chat = await make_chat(node_a, user)
    sio, inbox = await watcher(node_a, user, chat)
    sockets.append(sio)
    other = await connect_socket(node_b, user["access_token"])
    sockets.append(other)
    await sio.call("message:send", send(chat, "talk forever"))
    await until(lambda: len(inbox["ai:chunk"]) >= 5)
    stream_id = inbox["ai:start"][0]["stream_id"]
    stop_sent = time.monotonic()
    ack = await other.call("ai:stop", {"stream_id": stream_id})
    assert ack == {"ok": True, "stream_id": stream_id}
    call = gemini.calls[-1]
    await gemini.wait_client_gone(call, limit=1.0)
    assert call.ended is not None and call.ended - stop_sent < 1.0
    await until(lambda: inbox["ai:done"])
    await asyncio.sleep(0.2)
    done = inbox["ai:done"][0]
    streamed = "".join(c["text"] for c in inbox["ai:chunk"])
    assert done["message"]["status"] == "stopped" and done["message"]["content"] == streamed
    row = await stored(settings, stream_id)
    assert row["status"] == "stopped" and row["content"] == streamed
    assert call.tokens_sent < 200


async def test_other_user_cannot_stop_or_resume(ai_client: TestClient, gemini: FakeGemini, sockets: list[Any]) -> None:
    gemini.then(Behaviour(tokens=[f"x{i} " for i in range(30)], delay=0.02))
    alice = await register(ai_client)
    bob = await register(ai_client)
    chat = await make_chat(ai_client, alice)
    sio, inbox = await watcher(ai_client, alice, chat)
    sockets.append(sio)
    intruder = await connect_socket(ai_client, bob["access_token"])
    sockets.append(intruder)
    await sio.call("message:send", send(chat, "hello"))
    await until(lambda: inbox["ai:start"])
    stream_id = inbox["ai:start"][0]["stream_id"]
    for event, payload in [("ai:stop", {"stream_id": stream_id}), ("ai:resume", {"stream_id": stream_id})]:
        ack = await intruder.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    await until(lambda: inbox["ai:done"])
    assert inbox["ai:done"][0]["message"]["status"] == "complete"


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour(status=500), "provider_unavailable"),
        (Behaviour(status=429), "provider_rate_limited"),
        (Behaviour(hang=True), "provider_timeout"),
        (Behaviour(tokens=["one ", "two ", "three "], cut_after=2), None),
    ],
    ids=["500", "429", "timeout", "cut"],
)
async def test_upstream_failures_end_in_ai_error_and_user_can_send_again(
    aiohttp_client: Any,
    settings: Settings,
    gemini: FakeGemini,
    sockets: list[Any],
    behaviour: Behaviour,
    code: str | None,
) -> None:
    client = await aiohttp_client(
        create_app(
            ai_settings(
                settings, gemini, ai_max_attempts=2, ai_first_token_timeout_seconds=0.5, ai_idle_timeout_seconds=0.5
            )
        )
    )
    gemini.then(behaviour, behaviour)  # the retry (before any token) fails the same way
    user = await register(client)
    chat = await make_chat(client, user)
    sio, inbox = await watcher(client, user, chat)
    sockets.append(sio)
    await sio.call("message:send", send(chat, "will fail"))
    await until(lambda: inbox["ai:error"], limit=15)
    error = inbox["ai:error"][0]
    assert error["stream_id"] == inbox["ai:start"][0]["stream_id"]
    if code is not None:
        assert error["code"] == code
    else:  # a cut after tokens were sent is final (no retry), with a stable provider code
        assert error["code"].startswith("provider_")
    assert error["message"]
    assert inbox["ai:done"] == []

    gemini.script.clear()
    ack = await sio.call("message:send", send(chat, "try again"))
    assert ack["ok"]
    await until(lambda: inbox["ai:done"], limit=15)
    done = inbox["ai:done"][0]
    assert done["message"]["status"] == "complete"
    # The new reply answers both messages: the failed turn's and the new one.
    last = gemini.calls[-1].body["contents"][-1]["parts"][0]["text"]
    assert "will fail" in last and "try again" in last


async def test_retry_before_first_token_succeeds(ai_client: TestClient, gemini: FakeGemini, sockets: list[Any]) -> None:
    gemini.then(Behaviour(status=503), Behaviour(tokens=["recovered"]))
    user = await register(ai_client)
    chat = await make_chat(ai_client, user)
    sio, inbox = await watcher(ai_client, user, chat)
    sockets.append(sio)
    await sio.call("message:send", send(chat, "hi"))
    await until(lambda: inbox["ai:done"])
    assert inbox["ai:done"][0]["message"]["content"] == "recovered"
    assert len(gemini.calls) == 2 and inbox["ai:error"] == []


async def test_messages_during_a_reply_get_one_next_reply(
    ai_client: TestClient, gemini: FakeGemini, settings: Settings, sockets: list[Any]
) -> None:
    gemini.then(Behaviour(tokens=[f"a{i} " for i in range(20)], delay=0.02), Behaviour(tokens=["second reply"]))
    user = await register(ai_client)
    chat = await make_chat(ai_client, user)
    sio, inbox = await watcher(ai_client, user, chat)
    sockets.append(sio)
    first = await sio.call("message:send", send(chat, "first"))
    await until(lambda: inbox["ai:chunk"])
    second = await sio.call("message:send", send(chat, "second"))
    third = await sio.call("message:send", send(chat, "third"))
    assert second["ok"] and third["ok"]  # acked at once while the reply streams
    await until(lambda: len(inbox["ai:done"]) == 2)
    await asyncio.sleep(0.2)
    assert len(inbox["ai:start"]) == 2 and len(gemini.calls) == 2
    assert inbox["ai:start"][1]["reply_to"] == third["message"]["id"]
    assert "second" in gemini.calls[1].body["contents"][-1]["parts"][0]["text"]
    assert "third" in gemini.calls[1].body["contents"][-1]["parts"][0]["text"]
    # seqs: user 1, reply 2, user 3, user 4, reply 5: one gap-free sequence.
    conn = await asyncpg.connect(settings.database_url)
    rows = await conn.fetch("SELECT seq, role FROM messages WHERE session_id = $1 ORDER BY seq", uuid.UUID(chat["id"]))
    await conn.close()
    assert [(r["seq"], r["role"]) for r in rows] == [
        (1, "user"),
        (2, "assistant"),
        (3, "user"),
        (4, "user"),
        (5, "assistant"),
    ]
    assert first["message"]["seq"] == 1


async def test_reply_completes_when_the_user_leaves(
    ai_client: TestClient, gemini: FakeGemini, settings: Settings
) -> None:
    gemini.then(Behaviour(tokens=[f"z{i} " for i in range(15)], delay=0.02))
    user = await register(ai_client)
    chat = await make_chat(ai_client, user)
    sio, inbox = await watcher(ai_client, user, chat)
    await sio.call("message:send", send(chat, "bye"))
    await until(lambda: inbox["ai:start"])
    stream_id = inbox["ai:start"][0]["stream_id"]
    await sio.disconnect()
    deadline = time.monotonic() + 10
    while (await stored(settings, stream_id))["status"] == "streaming":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    row = await stored(settings, stream_id)
    assert row["status"] == "complete" and row["content"] == "".join(f"z{i} " for i in range(15))
