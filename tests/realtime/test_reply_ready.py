"""reply_ready through the app: a reply that finishes while its user has no live socket stores one
`reply_ready` notification (the persona's name, the reply's first 100 characters, the deep-link ids); a
user with a live socket is watching and gets none. And NotificationService.notify queues a push only for
a user who is offline, has a device and wants pushes of the kind."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from core.events import ServerEvent
from handlers.keys import POOL, REDIS
from server.keys import CONFIG
from services.notifications import NotificationService
from services.replies.service import preview
from storage.presence import Presence
from tests.fakes.push_queue import RecordingPushQueue
from tests.helpers import bearer, connect_socket, list_notifications, make_chat, register, send_message, settled_rows

N = "/api/v1/notifications"


async def send_rest(client: TestClient, user: dict[str, Any], chat: dict[str, Any], content: str) -> dict[str, Any]:
    return await send_message(client, user, chat["id"], content)


notifications = list_notifications


async def until_notified(client: TestClient, user: dict[str, Any], count: int, limit: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + limit
    while len(items := await notifications(client, user)) < count:
        assert time.monotonic() < deadline, f"{len(items)} notifications, expected {count}"
        await asyncio.sleep(0.05)
    return items


def presence(client: TestClient) -> Presence:
    # The same Redis keys as the app's own Presence: what any node sees.
    return Presence(client.app.get(REDIS), prefix=client.app[CONFIG].redis_prefix)


async def until_offline(client: TestClient, user_id: uuid.UUID, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while await presence(client).count(user_id) > 0:
        assert time.monotonic() < deadline, "the socket's presence was not removed"
        await asyncio.sleep(0.02)


async def test_a_reply_finishing_offline_notifies_once(client: TestClient, database_url: str) -> None:
    user = await register(client)
    chat = await make_chat(client, user, name="Ada Lovelace")
    sent = await send_rest(client, user, chat, "What is an analytical engine?")

    rows = await settled_rows(database_url, chat["id"])
    reply = rows[-1]
    assert reply["role"] == "assistant" and reply["status"] == "complete" and len(reply["content"]) > 100
    [notification] = await until_notified(client, user, 1)
    assert notification["kind"] == "reply_ready" and notification["read_at"] is None
    assert notification["title"] == "Ada Lovelace"
    assert notification["body"] == reply["content"][:100].rstrip() + "…"
    assert notification["data"] == {
        "session_id": chat["id"],
        "message_id": reply["id"],
        "persona_id": chat["persona_id"],
    }
    assert sent["id"] != reply["id"]
    await asyncio.sleep(0.3)
    assert len(await notifications(client, user)) == 1  # one reply, one notification


async def test_a_user_with_a_live_socket_gets_no_reply_ready(
    client: TestClient, database_url: str, sockets: list[Any]
) -> None:
    user = await register(client)
    user_id = uuid.UUID(user["user"]["id"])
    chat = await make_chat(client, user)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    await send_rest(client, user, chat, "I am watching")
    first = (await settled_rows(database_url, chat["id"]))[-1]

    # Then the user leaves: the next reply notifies, and it is the only notification (none for the first).
    await sio.disconnect()
    await until_offline(client, user_id)
    await send_rest(client, user, chat, "now I am gone")
    second = (await settled_rows(database_url, chat["id"]))[-1]
    assert second["id"] != first["id"]
    [notification] = await until_notified(client, user, 1)
    assert notification["data"]["message_id"] == second["id"]
    await asyncio.sleep(0.3)
    assert len(await notifications(client, user)) == 1


def test_the_preview_cuts_on_a_character_boundary() -> None:
    assert preview("short", 100) == "short"
    assert preview("x" * 100, 100) == "x" * 100
    assert preview("x" * 101, 100) == "x" * 100 + "…"
    # An accent, a family emoji (ZWJ sequence) or a flag is never split: the cut moves before it.
    assert preview("a" * 99 + "e\u0301 and more", 100) == "a" * 99 + "…"
    assert preview("a" * 98 + "\U0001f468\u200d\U0001f469\u200d\U0001f467 family", 100) == "a" * 98 + "…"
    assert preview("a" * 99 + "\U0001f1eb\U0001f1f7 flag", 100) == "a" * 99 + "…"
    assert preview("a" * 98 + "\U0001f1eb\U0001f1f7 flag", 100) == "a" * 98 + "\U0001f1eb\U0001f1f7…"


class _Recorded:
    def __init__(self) -> None:
        self.events: list[ServerEvent] = []

    async def to_user(self, user_id: uuid.UUID, event: ServerEvent) -> None:
        self.events.append(event)

    async def to_room(self, room: str, event: ServerEvent, *, skip_sid: str | None = None) -> None:
        self.events.append(event)

    async def to_rooms(self, rooms: list[str], event: ServerEvent) -> None:
        self.events.append(event)

    async def disconnect_user(self, user_id: uuid.UUID, *, reason: Any) -> None:
        return None


async def test_notify_queues_a_push_only_offline_with_a_device_and_push_on(
    client: TestClient, sockets: list[Any]
) -> None:
    user = await register(client)
    user_id = uuid.UUID(user["user"]["id"])
    queue = RecordingPushQueue()
    service = NotificationService(pool=client.app[POOL], events=_Recorded(), presence=presence(client), push=queue)

    async def notify() -> uuid.UUID:
        made = await service.notify(user_id, "credits", "5 credits added", "Balance 5", {"amount": 5})
        assert made is not None  # stored whatever happens to the push
        return made.id

    await notify()
    assert queue.deferred == []  # offline, but no device

    resp = await client.post(
        "/api/v1/devices", json={"token": f"tok-{uuid.uuid4().hex}", "platform": "android"}, headers=bearer(user)
    )
    assert resp.status == 201, await resp.text()
    queued = await notify()
    [deferral] = queue.deferred
    assert (deferral.notification_id, deferral.tokens, deferral.attempt, deferral.delay_seconds) == (queued, None, 1, 0)

    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    await notify()
    assert len(queue.deferred) == 1  # a live socket got the event: no push

    await sio.disconnect()
    await until_offline(client, user_id)
    resp = await client.patch(f"{N}/preferences", json={"kinds": {"credits": {"push": False}}}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    await notify()
    assert len(queue.deferred) == 1  # push off for the kind
    assert (await service.notify(user_id, "reply_ready", "t", "b")) is not None
    assert len(queue.deferred) == 2  # other kinds still push

    # Push off (no queue), or a queue that fails: the notification is stored and nothing is raised.
    off = NotificationService(pool=client.app[POOL], events=_Recorded(), presence=presence(client), push=None)
    assert await off.notify(user_id, "reply_ready", "t", "b") is not None
    queue.fail_with = ConnectionError("job queue down")
    assert await service.notify(user_id, "reply_ready", "t", "b") is not None
    assert len(queue.deferred) == 2
