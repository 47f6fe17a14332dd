"""REST /api/v1/notifications and /api/v1/devices: an admin credit grant stores a `credits` notification
and sends it live to every socket of the user; unread count, mark read, read-all and per-kind preferences
(`in_app` off stores nothing; `push` off keeps the record); other users' notifications and device tokens
answer 404; a device token moves to the newest user who registers it; bad input is 422."""

from __future__ import annotations

import uuid
from typing import Any

import socketio
from aiohttp.test_utils import TestClient

from tests.helpers import Inbox, bearer, connect_socket, make_admin, register, wait_until

N = "/api/v1/notifications"
D = "/api/v1/devices"


async def grant(client: TestClient, admin: dict[str, Any], user: dict[str, Any], amount: int = 5) -> None:
    body = {"amount": amount, "idempotency_key": str(uuid.uuid4())}
    resp = await client.post(f"/api/v1/admin/users/{user['user']['id']}/credits", json=body, headers=bearer(admin))
    assert resp.status == 200, await resp.text()


async def get(client: TestClient, user: dict[str, Any], path: str, **params: Any) -> Any:
    resp = await client.get(path, params=params, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def unread(client: TestClient, user: dict[str, Any]) -> int:
    return int((await get(client, user, f"{N}/unread-count"))["count"])


async def test_a_grant_notifies_every_socket_and_is_listed(
    client: TestClient, database_url: str, sockets: list[Any]
) -> None:
    admin, user = await make_admin(client, database_url), await register(client)
    inboxes = []
    for _ in range(2):
        sio = socketio.AsyncClient(reconnection=False)
        inboxes.append(Inbox(sio, "notification"))
        sockets.append(await connect_socket(client, user["access_token"], sio=sio))
    await grant(client, admin, user, 5)
    await wait_until(lambda: all(inbox["notification"] for inbox in inboxes))
    (event,) = inboxes[0]["notification"]
    assert inboxes[1]["notification"] == [event]
    notification = event["notification"]
    assert notification["kind"] == "credits" and notification["read_at"] is None
    assert notification["data"] == {"amount": 5, "balance": 5}
    page = await get(client, user, N)
    assert page == {"items": [notification], "next_cursor": None}
    assert await unread(client, user) == 1


async def test_unread_mark_read_read_all_and_pages(client: TestClient, database_url: str) -> None:
    admin, user = await make_admin(client, database_url), await register(client)
    for _ in range(5):
        await grant(client, admin, user, 1)
    assert await unread(client, user) == 5
    first = await get(client, user, N, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await get(client, user, N, limit=10, cursor=first["next_cursor"])
    ids = [n["id"] for n in first["items"] + rest["items"]]
    assert len(set(ids)) == 5 and rest["next_cursor"] is None
    assert [n["data"]["balance"] for n in first["items"] + rest["items"]] == [5, 4, 3, 2, 1]  # newest first

    resp = await client.post(f"{N}/{ids[0]}/read", headers=bearer(user))
    assert resp.status == 200, await resp.text()
    read = await resp.json()
    assert read["id"] == ids[0] and read["read_at"] is not None
    again = await (await client.post(f"{N}/{ids[0]}/read", headers=bearer(user))).json()
    assert again["read_at"] == read["read_at"]
    assert await unread(client, user) == 4
    only_unread = await get(client, user, N, unread="true")
    assert [n["id"] for n in only_unread["items"]] == ids[1:]

    resp = await client.post(f"{N}/read-all", headers=bearer(user))
    assert resp.status == 200 and await resp.json() == {"updated": 4}
    assert await unread(client, user) == 0
    assert (await get(client, user, N, unread="true"))["items"] == []
    assert len((await get(client, user, N))["items"]) == 5


async def test_preferences(client: TestClient, database_url: str, sockets: list[Any]) -> None:
    admin, user = await make_admin(client, database_url), await register(client)
    prefs = await get(client, user, f"{N}/preferences")
    kinds = ["reply_ready", "job_done", "subscription", "credits", "broadcast"]
    assert prefs == {"kinds": {k: {"in_app": True, "push": True} for k in kinds}}

    resp = await client.patch(f"{N}/preferences", json={"kinds": {"credits": {"push": False}}}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert changed["kinds"]["credits"] == {"in_app": True, "push": False}
    assert changed["kinds"]["broadcast"] == {"in_app": True, "push": True}
    assert await get(client, user, f"{N}/preferences") == changed
    await grant(client, admin, user)
    assert await unread(client, user) == 1  # push off keeps the in-app record

    resp = await client.patch(f"{N}/preferences", json={"kinds": {"credits": {"in_app": False}}}, headers=bearer(user))
    assert (await resp.json())["kinds"]["credits"] == {"in_app": False, "push": False}
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, "notification", "credits")
    sockets.append(await connect_socket(client, user["access_token"], sio=sio))
    await grant(client, admin, user)
    await wait_until(lambda: len(inbox["credits"]) == 1)
    assert inbox["notification"] == []  # in_app off: nothing stored, nothing sent
    assert await unread(client, user) == 1


async def test_other_users_notifications_and_devices_are_404(client: TestClient, database_url: str) -> None:
    admin, alice, bob = await make_admin(client, database_url), await register(client), await register(client)
    await grant(client, admin, alice)
    (mine,) = (await get(client, alice, N))["items"]
    resp = await client.post(f"{N}/{mine['id']}/read", headers=bearer(bob))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    assert (await client.post(f"{N}/{uuid.uuid4()}/read", headers=bearer(alice))).status == 404
    assert (await get(client, bob, N))["items"] == []
    assert await unread(client, alice) == 1  # bob's attempt changed nothing

    token = f"fcm-{uuid.uuid4().hex}"
    resp = await client.post(D, json={"token": token, "platform": "android"}, headers=bearer(alice))
    assert resp.status == 201, await resp.text()
    resp = await client.delete(f"{D}/{token}", headers=bearer(bob))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    assert (await client.delete(f"{D}/{token}", headers=bearer(alice))).status == 204
    assert (await client.delete(f"{D}/{token}", headers=bearer(alice))).status == 404


async def test_a_device_token_moves_to_the_newest_user(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    token = f"fcm-{uuid.uuid4().hex}:APA91b"
    body = {"token": token, "platform": "android"}
    first = await client.post(D, json=body, headers=bearer(alice))
    assert first.status == 201, await first.text()
    device = await first.json()
    assert device["token"] == token and device["platform"] == "android"
    again = await client.post(D, json=body, headers=bearer(alice))
    assert again.status == 200 and (await again.json())["created_at"] == device["created_at"]
    moved = await client.post(D, json={**body, "platform": "ios"}, headers=bearer(bob))
    assert moved.status == 201 and (await moved.json())["platform"] == "ios"
    assert (await client.delete(f"{D}/{token}", headers=bearer(alice))).status == 404  # no longer hers
    assert (await client.delete(f"{D}/{token}", headers=bearer(bob))).status == 204


async def test_bad_input_is_422(client: TestClient) -> None:
    user = await register(client)
    h = bearer(user)
    bad_devices = [
        {"token": 123, "platform": "android"},
        {"token": "t", "platform": "symbian"},
        {"token": "", "platform": "web"},
        {"token": "has space", "platform": "web"},
        {"token": "x" * 5000, "platform": "web"},
        {"platform": "web"},
        {"token": "t", "platform": "web", "extra": 1},
    ]
    for body in bad_devices:
        resp = await client.post(D, json=body, headers=h)
        assert resp.status == 422, (body, await resp.text())
    assert (await client.delete(f"{D}/{'x' * 5000}", headers=h)).status == 422
    bad_prefs = [
        {"kinds": {"credits": {"push": "no"}}},
        {"kinds": {"credits": {"push": None}}},
        {"kinds": {"marketing": {"push": False}}},
        {"kinds": {"credits": {"sms": True}}},
        {"kinds": []},
        {},
    ]
    for body in bad_prefs:
        resp = await client.patch(f"{N}/preferences", json=body, headers=h)
        assert resp.status == 422, (body, await resp.text())
    for params in ({"limit": "0"}, {"limit": "abc"}, {"cursor": "nope"}, {"unread": "maybe"}):
        resp = await client.get(N, params=params, headers=h)
        assert resp.status == 422, (params, await resp.text())
    assert (await client.post(f"{N}/not-an-id/read", headers=h)).status == 422
    assert (await client.get(N)).status == 401
