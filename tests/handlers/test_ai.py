"""AI over REST (issue 4, check 5): whole reply, SSE stream and its resume with Last-Event-ID,
sentiment and prompt enhancement; the openai-compatible and demo providers."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers import bearer, make_chat, register

A = "/api/v1/ai"


@pytest.fixture
async def gemini_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    update = {"ai_provider": "gemini", "gemini_api_key": SecretStr("k"), "gemini_base_url": gemini.url}
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


def body(chat: dict[str, Any], content: str, client_id: str | None = None) -> dict[str, Any]:
    return {"session_id": chat["id"], "client_id": client_id or str(uuid.uuid4()), "content": content}


async def read_sse(resp: Any, stop_after_chunks: int | None = None) -> list[tuple[str, str | None, Any]]:
    """(event, id, data) triples; stops early after N chunks when asked (a dropped connection)."""
    events: list[tuple[str, str | None, Any]] = []
    event, event_id, data = "message", None, []
    chunks = 0
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((event, event_id, json.loads("\n".join(data))))
            if event == "chunk":
                chunks += 1
                if stop_after_chunks is not None and chunks >= stop_after_chunks:
                    resp.close()
                    return events
            if event in ("done", "error"):
                return events
            event, event_id, data = "message", None, []
    return events


async def test_generate_returns_the_stored_reply(gemini_client: TestClient, gemini: FakeGemini) -> None:
    gemini.then(Behaviour(tokens=["The ", "answer ", "is ", "42."], usage=(7, 4, 11)))
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    resp = await gemini_client.post(f"{A}/generate", json=body(chat, "what is it?"), headers=bearer(user))
    assert resp.status == 200, await resp.text()
    reply = await resp.json()
    assert reply["role"] == "assistant" and reply["content"] == "The answer is 42." and reply["status"] == "complete"
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert reply["seq"] == 2 and reply["session_id"] == chat["id"]


async def test_generate_reports_provider_failure(gemini_client: TestClient, gemini: FakeGemini) -> None:
    gemini.then(Behaviour(status=400))
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    resp = await gemini_client.post(f"{A}/generate", json=body(chat, "fail please"), headers=bearer(user))
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "provider_error"


async def test_sse_streams_the_same_reply_and_resumes_with_last_event_id(
    gemini_client: TestClient, gemini: FakeGemini
) -> None:
    tokens = [f"t{i} " for i in range(30)]
    gemini.then(Behaviour(tokens=tokens, delay=0.03, usage=(5, 30, 35)))
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    resp = await gemini_client.post(f"{A}/stream", json=body(chat, "stream it"), headers=bearer(user))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    first = await read_sse(resp, stop_after_chunks=3)  # the connection drops after 3 chunks
    assert first[0][0] == "start"
    stream_id = first[0][2]["stream_id"]
    chunks = [e for e in first if e[0] == "chunk"]
    assert [c[1] for c in chunks] == ["0", "1", "2"]
    await asyncio.sleep(0.2)

    again = await gemini_client.get(
        f"{A}/stream/{stream_id}", headers={**bearer(user), "Last-Event-ID": chunks[-1][1] or ""}
    )
    assert again.status == 200
    rest = await read_sse(again)
    more = [e for e in rest if e[0] == "chunk"]
    assert [int(c[1] or -1) for c in more] == list(range(3, 3 + len(more)))
    done = rest[-1]
    assert done[0] == "done"
    text = "".join(c[2]["text"] for c in chunks + more)
    assert text == "".join(tokens) == done[2]["message"]["content"]
    assert done[2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35}

    # Replay of a finished stream from the start, by query parameter.
    replay = await read_sse(await gemini_client.get(f"{A}/stream/{stream_id}?from_index=0", headers=bearer(user)))
    assert "".join(e[2]["text"] for e in replay if e[0] == "chunk") == text


async def test_sse_resume_is_owner_only_and_validates(gemini_client: TestClient, gemini: FakeGemini) -> None:
    user = await register(gemini_client)
    other = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    reply = await (await gemini_client.post(f"{A}/generate", json=body(chat, "hi"), headers=bearer(user))).json()
    assert (await gemini_client.get(f"{A}/stream/{reply['id']}", headers=bearer(other))).status == 404
    assert (await gemini_client.get(f"{A}/stream/{uuid.uuid4()}", headers=bearer(user))).status == 404
    assert (await gemini_client.get(f"{A}/stream/not-a-uuid", headers=bearer(user))).status == 422
    bad = await gemini_client.get(f"{A}/stream/{reply['id']}", headers={**bearer(user), "Last-Event-ID": "x"})
    assert bad.status == 422


async def test_openai_compatible_provider(aiohttp_client: Any, settings: Settings) -> None:
    fake = FakeOpenAI()
    await fake.start()
    try:
        update = {"ai_provider": "openai", "openai_base_url": fake.url, "openai_model": "llama3"}
        client = await aiohttp_client(create_app(settings.model_copy(update=update)))
        user = await register(client)
        chat = await make_chat(client, user, personality="Speaks like a robot.")
        reply = await (await client.post(f"{A}/generate", json=body(chat, "beep?"), headers=bearer(user))).json()
        assert reply["content"] == "Hi from the fake OpenAI."
        assert reply["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        sent = fake.bodies[0]
        assert sent["model"] == "llama3" and sent["stream"] is True
        assert sent["messages"][0]["role"] == "system" and "robot" in sent["messages"][0]["content"]
        assert sent["messages"][-1] == {"role": "user", "content": "beep?"}
    finally:
        await fake.close()


async def test_demo_provider_is_labelled(client: TestClient) -> None:
    user = await register(client)
    chat = await make_chat(client, user, name="Ada")
    reply = await (await client.post(f"{A}/generate", json=body(chat, "hello"), headers=bearer(user))).json()
    assert reply["content"].startswith("[demo] Ada here.") and "hello" in reply["content"]
    assert reply["usage"]["completion_tokens"] > 0


async def test_sentiment_and_enhance(client: TestClient, gemini_client: TestClient, gemini: FakeGemini) -> None:
    user = await register(client)
    for text, label in [
        ("I love this, thanks!", "positive"),
        ("this is terrible and sad", "negative"),
        ("the train leaves at noon", "neutral"),
    ]:
        resp = await client.post(f"{A}/sentiment", json={"text": text}, headers=bearer(user))
        assert resp.status == 200 and await resp.json() == {"label": label}
    # Enhance answers the provider's rewrite, not the text it was given: the demo provider's is fixed...
    enhanced = await client.post(f"{A}/enhance-prompt", json={"text": "a grumpy  wizard."}, headers=bearer(user))
    assert enhanced.status == 200
    assert await enhanced.json() == {
        "text": "[demo] a grumpy wizard. Speaks in a consistent voice, stays in character, asks follow-up "
        "questions, and keeps replies concise and warm."
    }
    # ...and a real provider is asked to rewrite (its instruction and the text), and its answer comes back whole.
    gemini.then(Behaviour(tokens=["  Morgr", "im, a wizard ", "who grumbles in rhyme.\n"]))
    other = await register(gemini_client)
    resp = await gemini_client.post(f"{A}/enhance-prompt", json={"text": "a grumpy wizard"}, headers=bearer(other))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"text": "Morgrim, a wizard who grumbles in rhyme."}
    request = gemini.calls[-1].body
    assert "Rewrite the user's persona description" in request["systemInstruction"]["parts"][0]["text"]
    assert request["contents"] == [{"role": "user", "parts": [{"text": "a grumpy wizard"}]}]
    assert (await client.post(f"{A}/sentiment", json={"text": ""}, headers=bearer(user))).status == 422
    assert (await client.post(f"{A}/sentiment", json={"text": "x"})).status == 401


async def test_generate_for_someone_elses_session_is_404(client: TestClient) -> None:
    alice = await register(client)
    bob = await register(client)
    chat = await make_chat(client, alice)
    resp = await client.post(f"{A}/generate", json=body(chat, "intrude"), headers=bearer(bob))
    assert resp.status == 404
