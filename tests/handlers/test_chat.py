"""Chat sessions and history over REST (issue 3)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.helpers import Inbox, bearer, connect_socket, make_chat, make_persona, register, settled_rows

C = "/api/v1/chat/sessions"


async def _send(client: TestClient, user: dict[str, Any], session_id: str, content: str) -> dict[str, Any]:
    resp = await client.post(
        f"{C}/{session_id}/messages", json={"client_id": str(uuid.uuid4()), "content": content}, headers=bearer(user)
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_create_defaults_title_to_persona_name(client: TestClient) -> None:
    user = await register(client)
    persona = await make_persona(client, user, name="Captain Nemo")
    resp = await client.post(C, json={"persona_id": persona["id"]}, headers=bearer(user))
    assert resp.status == 201
    session = await resp.json()
    assert session["title"] == "Captain Nemo" and session["persona_id"] == persona["id"]
    assert session["pinned"] is False and session["last_seq"] == 0
    named = await client.post(C, json={"persona_id": persona["id"], "title": "Voyage"}, headers=bearer(user))
    assert (await named.json())["title"] == "Voyage"
    missing = await client.post(C, json={"persona_id": str(uuid.uuid4())}, headers=bearer(user))
    assert missing.status == 404
    bad = await client.post(C, json={"persona_id": "nope"}, headers=bearer(user))
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "persona_id"


async def test_chat_with_someone_elses_public_persona(client: TestClient) -> None:
    author = await register(client)
    reader = await register(client)
    public = await make_persona(client, author, visibility="public")
    resp = await client.post(C, json={"persona_id": public["id"]}, headers=bearer(reader))
    assert resp.status == 201


async def test_list_pinned_first_then_recent_and_paginates(client: TestClient) -> None:
    user = await register(client)
    persona = await make_persona(client, user)
    ids = []
    for i in range(5):
        resp = await client.post(C, json={"persona_id": persona["id"], "title": f"s{i}"}, headers=bearer(user))
        ids.append((await resp.json())["id"])
    await _send(client, user, ids[1], "bump s1 to most recent")
    pin = await client.patch(f"{C}/{ids[3]}", json={"pinned": True}, headers=bearer(user))
    assert pin.status == 200 and (await pin.json())["pinned"] is True
    rename = await client.patch(f"{C}/{ids[0]}", json={"title": "renamed"}, headers=bearer(user))
    assert (await rename.json())["title"] == "renamed"

    seen: list[str] = []
    cursor = None
    while True:
        url = f"{C}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=bearer(user))).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    # pinned s3 first; then by last activity: renamed s0 (just now), s1 (message), s4, s2
    assert seen == [ids[3], ids[0], ids[1], ids[4], ids[2]]
    bad = await client.get(f"{C}?cursor=garbage", headers=bearer(user))
    assert bad.status == 422


async def test_history_both_directions(client: TestClient, settings: Settings) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    for i in range(7):
        await _send(client, user, chat["id"], f"m{i + 1}")
    # Each message may get a (demo) AI reply in between: the history is every stored message.
    everything = [r["seq"] for r in await settled_rows(settings.database_url, chat["id"])]
    assert everything == list(range(1, len(everything) + 1)) and len(everything) >= 8
    forward: list[int] = []
    after = 0
    while True:
        page = await (
            await client.get(f"{C}/{chat['id']}/messages?after_seq={after}&limit=3", headers=bearer(user))
        ).json()
        forward += [m["seq"] for m in page["items"]]
        if not page["next_cursor"]:
            break
        after = int(page["next_cursor"])
    assert forward == everything

    top = everything[-1] + 1
    newest = await (
        await client.get(f"{C}/{chat['id']}/messages?before_seq={top}&limit=3", headers=bearer(user))
    ).json()
    assert [m["seq"] for m in newest["items"]] == everything[-3:]
    older = await (
        await client.get(f"{C}/{chat['id']}/messages?before_seq={newest['next_cursor']}&limit=3", headers=bearer(user))
    ).json()
    assert [m["seq"] for m in older["items"]] == everything[-6:-3]
    users = [m for m in (newest["items"] + older["items"]) if m["role"] == "user"]
    assert users and all(m["status"] == "complete" for m in users)
    # Both: the messages between them, paged forward.
    both = await client.get(f"{C}/{chat['id']}/messages?after_seq=1&before_seq=6&limit=3", headers=bearer(user))
    page = await both.json()
    assert [m["seq"] for m in page["items"]] == [2, 3, 4] and page["next_cursor"] == "4"
    rest = await client.get(f"{C}/{chat['id']}/messages?after_seq=4&before_seq=6&limit=3", headers=bearer(user))
    page = await rest.json()
    assert [m["seq"] for m in page["items"]] == [5] and page["next_cursor"] is None
    typo = await client.get(f"{C}/{chat['id']}/messages?limit=abc", headers=bearer(user))
    assert typo.status == 422 and (await typo.json())["error"]["details"][0]["field"] == "limit"


async def test_rest_send_reaches_sockets_and_validates(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    device = await connect_socket(client, user["access_token"])
    sockets.append(device)
    inbox = Inbox(device, "message:new")
    sent = await _send(client, user, chat["id"], "from rest")
    for _ in range(100):
        if inbox["message:new"]:
            break
        await device.sleep(0.02)
    assert inbox["message:new"] == [{"message": sent}]
    too_long = await client.post(
        f"{C}/{chat['id']}/messages", json={"client_id": str(uuid.uuid4()), "content": "x" * 9000}, headers=bearer(user)
    )
    assert too_long.status == 422 and (await too_long.json())["error"]["details"][0]["field"] == "content"
    blank = await client.post(
        f"{C}/{chat['id']}/messages", json={"client_id": str(uuid.uuid4()), "content": "   "}, headers=bearer(user)
    )
    assert blank.status == 422
    huge = await client.post(
        f"{C}/{chat['id']}/messages",
        json={"client_id": str(uuid.uuid4()), "content": "x" * 1_000_000},
        headers=bearer(user),
    )
    assert huge.status == 413


async def test_delete_session_removes_messages(client: TestClient) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    await _send(client, user, chat["id"], "soon gone")
    assert (await client.delete(f"{C}/{chat['id']}", headers=bearer(user))).status == 204
    assert (await client.get(f"{C}/{chat['id']}", headers=bearer(user))).status == 404
    assert (await client.get(f"{C}/{chat['id']}/messages", headers=bearer(user))).status == 404
    assert (await client.delete(f"{C}/{chat['id']}", headers=bearer(user))).status == 404
