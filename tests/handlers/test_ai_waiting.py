"""REST replies wait on the reply service, not on the database (issue 11, defect 5): a chat whose
persona was deleted is refused at once with 409 `no_persona` and nothing is stored; a generate queued
behind a streaming reply gets the next reply, the one that answers it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.handlers.test_ai import A, body
from tests.helpers import bearer, make_chat, make_plain_chat, register, wait_until


@pytest.fixture
async def gemini_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    update = {"ai_provider": "gemini", "gemini_api_key": SecretStr("k"), "gemini_base_url": gemini.url}
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


@pytest.mark.parametrize("path", ["generate", "stream"])
async def test_chat_without_persona_is_refused_at_once(gemini_client: TestClient, path: str) -> None:
    user = await register(gemini_client)
    chat = await make_plain_chat(gemini_client, user)
    resp = await gemini_client.post(f"{A}/{path}", json=body(chat, "anyone?"), headers=bearer(user))
    assert resp.status == 409, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "no_persona" and "persona" in error["message"]
    history = await gemini_client.get(f"/api/v1/chat/sessions/{chat['id']}/messages", headers=bearer(user))
    assert (await history.json())["items"] == []


async def test_generate_behind_a_streaming_reply_gets_the_next_one(
    gemini_client: TestClient, gemini: FakeGemini
) -> None:
    gemini.then(Behaviour(tokens=[f"a{i} " for i in range(30)], delay=0.03), Behaviour(tokens=["second"]))
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    first = asyncio.create_task(gemini_client.post(f"{A}/generate", json=body(chat, "first"), headers=bearer(user)))
    await wait_until(lambda: gemini.calls)
    second = await gemini_client.post(f"{A}/generate", json=body(chat, "second"), headers=bearer(user))
    assert second.status == 200, await second.text()
    reply = await second.json()
    assert reply["content"] == "second" and reply["status"] == "complete"
    first_reply = await (await first).json()
    assert first_reply["content"] == "".join(f"a{i} " for i in range(30))
    assert reply["seq"] > first_reply["seq"]
