"""Regenerate, select, continue and edit-with-regenerate against the fake Gemini (issue 15, checks 2 and 3):
every variant kept and stored with usage, the prompt sees only the selected one, each regeneration charged
once and given back when it fails."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, bearer, connect_socket, make_chat, register, wait_until
from tests.realtime.test_ai_replies import ai_settings
from tests.realtime.test_conversation import history


def _send(session_id: str, content: str) -> dict[str, Any]:
    return {"session_id": session_id, "client_id": str(uuid.uuid4()), "content": content}


async def used_today(client: TestClient, user: dict[str, Any]) -> int:
    usage = await (await client.get("/api/v1/usage/current", headers=bearer(user))).json()
    return int(usage["used_today"])


async def quota_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    return await aiohttp_client(create_app(ai_settings(settings, gemini, free_daily_messages=10, ai_max_attempts=1)))


async def test_regenerate_keeps_every_variant_and_the_prompt_sees_the_selected_one(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = await quota_client(aiohttp_client, settings, gemini)
    user = await register(client)
    chat = await make_chat(client, user, name="Ada")
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    inbox = Inbox(phone, "ai:start", "ai:done", "ai:error", "message:updated")
    assert (await phone.call("chat:join", {"session_id": chat["id"]}))["ok"]
    gemini.then(Behaviour(tokens=["Alpha ", "one"], usage=(10, 2, 12)))
    assert (await phone.call("message:send", _send(chat["id"], "hi")))["ok"]
    await wait_until(lambda: len(inbox["ai:done"]) == 1)
    reply = inbox["ai:done"][0]["message"]
    assert await used_today(client, user) == 1
    before = await history(client, user, chat["id"])
    seen_rev = max(m["rev"] for m in before)  # a second device goes away here

    for n, word in ((2, "Beta"), (3, "Gamma")):
        gemini.then(Behaviour(tokens=[word, " two"], usage=(20, n, 20 + n)))
        ack = await phone.call("ai:regenerate", {"message_id": reply["id"]})
        assert ack["ok"], ack
        assert ack["message"]["status"] == "streaming" and ack["message"]["variant"] == n - 1
        await wait_until(lambda n=n: len(inbox["ai:done"]) == n)
        start = inbox["ai:start"][-1]
        assert start["message_id"] == reply["id"] and start["variant"] == n - 1 and start["stream_id"] == reply["id"]
    done = inbox["ai:done"][-1]["message"]
    assert [v["content"] for v in done["variants"]] == ["Alpha one", "Beta two", "Gamma two"]
    assert [v["usage"]["completion_tokens"] for v in done["variants"]] == [2, 2, 3]
    assert done["variant"] == 2 and done["content"] == "Gamma two" and done["seq"] == reply["seq"]
    assert await used_today(client, user) == 3
    # The regenerations were asked with the same conversation as the reply itself.
    assert gemini.calls[1].body["contents"] == gemini.calls[0].body["contents"]

    picked = await phone.call("message:select", {"message_id": reply["id"], "variant": 1})
    assert picked["ok"] and picked["message"]["content"] == "Beta two"
    gemini.then(Behaviour(tokens=["Delta"]))
    assert (await phone.call("message:send", _send(chat["id"], "and then?")))["ok"]
    await wait_until(lambda: len(inbox["ai:done"]) == 4)
    model_text = " ".join(p["text"] for p in gemini.calls[-1].parts("model"))
    assert "Beta two" in model_text and "Alpha" not in model_text and "Gamma" not in model_text
    assert await used_today(client, user) == 4

    # A regeneration that fails gives its charge back; the variant before it counts again.
    newest = inbox["ai:done"][-1]["message"]
    gemini.then(Behaviour(status=500))
    assert (await phone.call("ai:regenerate", {"message_id": newest["id"]}))["ok"]
    await wait_until(lambda: len(inbox["ai:error"]) == 1)
    await wait_until(lambda: any(e["message"]["id"] == newest["id"] for e in inbox["message:updated"]))
    assert await used_today(client, user) == 4
    rows = await history(client, user, chat["id"])
    restored = next(m for m in rows if m["id"] == newest["id"])
    assert restored["variant"] == 0 and restored["content"] == "Delta" and restored["status"] == "complete"
    assert [v["status"] for v in restored["variants"]] == ["complete", "failed"]

    # The device that went away syncs by rev and ends with exactly the server's conversation, variants and all.
    tablet = await connect_socket(client, user["access_token"])
    sockets.append(tablet)
    synced = await tablet.call("sync", {"session_id": chat["id"], "after_rev": seen_rev})
    view = {m["id"]: m for m in before}
    view.update({m["id"]: m for m in synced["messages"]})
    assert sorted(view.values(), key=lambda m: m["seq"]) == rows
    # The device connected throughout heard of each change to the two replies: two regenerations and a
    # selection of the first, the failed regeneration of the second.
    updated = [e["message"]["id"] for e in inbox["message:updated"]]
    assert updated == [reply["id"]] * 3 + [newest["id"]]

    # Only the newest reply; never another user's.
    old = await phone.call("ai:regenerate", {"message_id": reply["id"]})
    assert old["ok"] is False and old["error"]["code"] == "invalid"
    other = await register(client)
    intruder = await connect_socket(client, other["access_token"])
    sockets.append(intruder)
    for event in ("ai:regenerate", "ai:continue"):
        ack = await intruder.call(event, {"message_id": newest["id"]})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    resp = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages/{newest['id']}/regenerate", headers=bearer(other)
    )
    assert resp.status == 404


async def test_edit_with_regenerate_and_continue(
    aiohttp_client: Any, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = await quota_client(aiohttp_client, settings, gemini)
    user = await register(client)
    chat = await make_chat(client, user)
    phone = await connect_socket(client, user["access_token"])
    sockets.append(phone)
    inbox = Inbox(phone, "ai:done")
    assert (await phone.call("chat:join", {"session_id": chat["id"]}))["ok"]
    gemini.then(Behaviour(tokens=["First answer."]))
    sent = await phone.call("message:send", _send(chat["id"], "What is a sloop?"))
    await wait_until(lambda: len(inbox["ai:done"]) == 1)
    reply = inbox["ai:done"][0]["message"]

    gemini.then(Behaviour(tokens=["Second answer."]))
    edit = {"message_id": sent["message"]["id"], "content": "What is a ketch?", "regenerate": True}
    edited = await phone.call("message:edit", edit)
    assert edited["ok"], edited
    assert edited["message"]["content"] == "What is a ketch?" and edited["message"]["edited_at"]
    await wait_until(lambda: len(inbox["ai:done"]) == 2)
    again = inbox["ai:done"][-1]["message"]
    assert again["id"] == reply["id"] and [v["content"] for v in again["variants"]] == [
        "First answer.",
        "Second answer.",
    ]
    assert "What is a ketch?" in gemini.calls[-1].user_text()  # the edited text was asked

    gemini.then(Behaviour(tokens=[" And more."]))
    resp = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages/{reply['id']}/regenerate", headers=bearer(user)
    )
    assert resp.status == 202 and (await resp.json())["variant"] == 2
    await wait_until(lambda: len(inbox["ai:done"]) == 3)
    gemini.then(Behaviour(tokens=[" The end."]))
    continued = await phone.call("ai:continue", {"message_id": reply["id"]})
    assert continued["ok"], continued
    await wait_until(lambda: len(inbox["ai:done"]) == 4)
    final = inbox["ai:done"][-1]["message"]
    assert final["content"] == " And more. The end." and final["variant"] == 2
    assert final["variants"][2]["content"] == " And more. The end."
    assert gemini.calls[-1].parts("model")[-1]["text"] == " And more."  # it went on from its text so far
    assert await used_today(client, user) == 4  # the send, two regenerations (the edit's and REST), the continuation

    not_newest_user = await phone.call("message:edit", {"message_id": reply["id"], "content": "x", "regenerate": True})
    assert not_newest_user["ok"] is False and not_newest_user["error"]["code"] == "invalid"
