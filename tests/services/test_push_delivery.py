"""PushDelivery with the real firebase-admin SDK (FcmSender) against the fake FCM server and a real
database: one push per device with the deep link and the tap options, unregistered devices deleted (only
the user's own), 429 and 503 queued again with backoff until the last attempt, a push turned off or a
token that moved to another user after queueing sends nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import structlog.testing

from core.entities import Notification
from core.events import ServerEvent
from providers.push import FcmSender, Push, PushResult, PushSendError
from services.notifications import NotificationService
from services.push_delivery import PushDelivery, push_data, token_hash
from storage.db import create_pool, migrate
from storage.notifications import DeviceStore, NotificationStore
from tests.fakes.fcm import FakeFcm
from tests.fakes.push_queue import RecordingPushQueue
from tests.storage.factories import make_user

store, devices = NotificationStore(), DeviceStore()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)  # the run's shared database; tests isolate themselves with their own users
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def queue() -> RecordingPushQueue:
    return RecordingPushQueue()


@pytest.fixture
def delivery(pool: asyncpg.Pool, fcm_sender: FcmSender, queue: RecordingPushQueue) -> PushDelivery:
    return PushDelivery(pool, fcm_sender, queue, max_attempts=5, base_delay_seconds=2.0)


def tok(tag: str) -> str:
    return f"tok-{tag}-{uuid.uuid4().hex}"


async def new_user(pool: asyncpg.Pool, *platform_tokens: tuple[str, str]) -> uuid.UUID:
    """A user with a device for each (platform, token)."""
    async with pool.acquire() as conn:
        user_id = (await make_user(conn)).id
        for platform, token in platform_tokens:
            await devices.upsert(conn, token=token, user_id=user_id, platform=platform)
    return user_id


async def stored(
    pool: asyncpg.Pool, user_id: uuid.UUID, kind: str = "reply_ready", data: dict[str, Any] | None = None
) -> Notification:
    async with pool.acquire() as conn:
        return await store.insert(
            conn, user_id=user_id, kind=kind, title="Ada", body="Here is your answer…", data=data or {}
        )


async def tokens_of(pool: asyncpg.Pool, user_id: uuid.UUID) -> list[str]:
    async with pool.acquire() as conn:
        return [d.token for d in await devices.of_user(conn, user_id)]


async def test_one_push_per_device_with_the_deep_link_and_tap_options(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm, queue: RecordingPushQueue
) -> None:
    phone, tablet, theirs = tok("android"), tok("ios"), tok("other")
    user_id = await new_user(pool, ("android", phone), ("ios", tablet))
    await new_user(pool, ("android", theirs))
    session_id, message_id, persona_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    deep_link = {"session_id": str(session_id), "message_id": str(message_id), "persona_id": str(persona_id)}
    notification = await stored(pool, user_id, data=deep_link)

    summary = await delivery.deliver(notification_id=notification.id)

    assert summary == {"sent": 2, "unregistered": 0, "retried": 0, "failed": 0}
    assert queue.deferred == [] and fake_fcm.messages_for(theirs) == []
    data = {"kind": "reply_ready", "notification_id": str(notification.id), **deep_link}
    for token in (phone, tablet):
        [message] = fake_fcm.messages_for(token)
        assert message["data"] == data
        assert message["notification"] == {"title": "Ada", "body": "Here is your answer…"}
        android = message["android"]
        assert android["priority"] == "high" and android["collapse_key"] == f"chat-{session_id}"
        assert android["notification"] == {
            "channel_id": "chat",
            "click_action": "OPEN_CHAT",
            "tag": f"chat-{session_id}",
        }
        apns = message["apns"]
        assert apns["headers"]["apns-collapse-id"] == f"chat-{session_id}"
        aps = apns["payload"]["aps"]
        assert aps["thread-id"] == str(session_id) and aps["category"] == "CHAT_REPLY"
        assert aps["alert"] == {"title": "Ada", "body": "Here is your answer…"}
        assert {k: apns["payload"][k] for k in data} == data


async def test_other_kinds_carry_their_data_as_strings_and_no_chat_thread(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm
) -> None:
    phone = tok("credits")
    user_id = await new_user(pool, ("android", phone))
    notification = await stored(
        pool, user_id, kind="credits", data={"amount": 5, "paid": True, "note": "thanks", "google.x": "dropped"}
    )
    assert (await delivery.deliver(notification_id=notification.id))["sent"] == 1
    [message] = fake_fcm.messages_for(phone)
    assert message["data"] == {
        "amount": "5",
        "paid": "true",
        "note": "thanks",
        "kind": "credits",
        "notification_id": str(notification.id),
    }
    assert "collapse_key" not in message["android"] and "thread-id" not in message["apns"]["payload"]["aps"]
    # A source's data cannot replace what the app routes on.
    forged = Notification(**{**notification.__dict__, "data": {"kind": "broadcast", "notification_id": "x"}})
    assert push_data(forged)["kind"] == "credits" and push_data(forged)["notification_id"] == str(notification.id)


async def test_unregistered_deletes_that_device_only(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm
) -> None:
    gone, kept = tok("gone"), tok("kept")
    fake_fcm.answer(gone, "unregistered")
    user_id = await new_user(pool, ("android", gone), ("ios", kept))
    notification = await stored(pool, user_id)

    summary = await delivery.deliver(notification_id=notification.id)

    assert summary == {"sent": 1, "unregistered": 1, "retried": 0, "failed": 0}
    assert await tokens_of(pool, user_id) == [kept]


async def test_quota_exceeded_is_retried_after_retry_after_for_that_token_only(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm, queue: RecordingPushQueue
) -> None:
    busy, fine = tok("quota"), tok("fine")
    fake_fcm.answer(busy, "quota_exceeded", retry_after=7)
    user_id = await new_user(pool, ("android", busy), ("android", fine))
    notification = await stored(pool, user_id)

    summary = await delivery.deliver(notification_id=notification.id)

    assert summary == {"sent": 1, "unregistered": 0, "retried": 1, "failed": 0}
    [deferral] = queue.deferred
    assert deferral.notification_id == notification.id and deferral.tokens == [busy] and deferral.attempt == 2
    assert deferral.delay_seconds >= 7
    # The job runs later: FCM takes it now, and the device that already had it gets nothing twice.
    fake_fcm.answer(busy, "ok")
    assert await queue.run(deferral, delivery) == {"sent": 1, "unregistered": 0, "retried": 0, "failed": 0}
    assert len(fake_fcm.messages_for(busy)) == 2 and len(fake_fcm.messages_for(fine)) == 1
    assert set(await tokens_of(pool, user_id)) == {busy, fine}


async def test_unavailable_backs_off_exponentially_then_gives_up(
    pool: asyncpg.Pool, fcm_sender: FcmSender, fake_fcm: FakeFcm, queue: RecordingPushQueue
) -> None:
    down = tok("down")
    fake_fcm.answer(down, "unavailable")
    user_id = await new_user(pool, ("ios", down))
    notification = await stored(pool, user_id)
    queue.delivery = PushDelivery(pool, fcm_sender, queue, max_attempts=4, base_delay_seconds=2.0)

    first = await queue.delivery.deliver(notification_id=notification.id)

    assert first == {"sent": 0, "unregistered": 0, "retried": 1, "failed": 0}
    assert [(d.attempt, d.delay_seconds, d.tokens) for d in queue.deferred] == [
        (2, 2.0, [down]),
        (3, 4.0, [down]),
        (4, 8.0, [down]),
    ]
    # Inline runs end deepest first: the last attempt gave up, and nothing was queued after it.
    assert queue.summaries[0] == {"sent": 0, "unregistered": 0, "retried": 0, "failed": 1}
    assert len(fake_fcm.messages_for(down)) == 4
    assert await tokens_of(pool, user_id) == [down]  # a 503 says nothing about the device


class _Failing:
    """A sender whose whole batch fails (the OAuth token could not be fetched, say)."""

    async def send(self, messages: Sequence[Push]) -> list[PushResult]:
        raise PushSendError("token refresh failed")

    async def close(self) -> None:
        return None


async def test_a_failed_batch_is_retried_whole(pool: asyncpg.Pool, queue: RecordingPushQueue) -> None:
    a, b = tok("a"), tok("b")
    user_id = await new_user(pool, ("android", a), ("ios", b))
    notification = await stored(pool, user_id)
    delivery = PushDelivery(pool, _Failing(), queue, max_attempts=3, base_delay_seconds=1.5)

    assert (await delivery.deliver(notification_id=notification.id, attempt=2))["retried"] == 2
    [deferral] = queue.deferred
    assert sorted(deferral.tokens or []) == sorted([a, b]) and deferral.attempt == 3 and deferral.delay_seconds == 3.0
    assert (await queue.run(deferral, delivery))["failed"] == 2  # the last attempt: given up
    assert len(queue.deferred) == 1


async def test_push_turned_off_after_queueing_sends_nothing(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm, queue: RecordingPushQueue
) -> None:
    phone = tok("off")
    user_id = await new_user(pool, ("android", phone))
    notifications = NotificationService(pool=pool, events=_NoEvents(), presence=_Offline(), push=queue)
    notification = await notifications.notify(user_id, "reply_ready", "Ada", "hello", {"session_id": "s"})
    assert notification is not None
    [deferral] = queue.deferred
    assert (deferral.notification_id, deferral.tokens, deferral.attempt, deferral.delay_seconds) == (
        notification.id,
        None,
        1,
        0,
    )
    await notifications.update_preferences(user_id, {"reply_ready": (None, False)})

    assert await queue.run(deferral, delivery) == {"sent": 0, "unregistered": 0, "retried": 0, "failed": 0}
    assert fake_fcm.messages_for(phone) == []


async def test_a_notification_read_meanwhile_is_not_pushed(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm
) -> None:
    phone = tok("read")
    user_id = await new_user(pool, ("android", phone))
    notification = await stored(pool, user_id)
    async with pool.acquire() as conn:
        await store.mark_read(conn, notification.id, user_id)
    assert (await delivery.deliver(notification_id=notification.id))["sent"] == 0
    assert fake_fcm.messages_for(phone) == []


async def test_a_token_that_moved_to_another_user_is_not_pushed_for_the_first(
    pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm
) -> None:
    shared = tok("moved")
    alice = await new_user(pool, ("android", shared))
    notification = await stored(pool, alice)
    bob = await new_user(pool, ("ios", shared))  # the phone changed hands after the push was queued

    assert (await delivery.deliver(notification_id=notification.id))["sent"] == 0
    assert (await delivery.deliver(notification_id=notification.id, tokens=[shared], attempt=2))["sent"] == 0
    assert fake_fcm.messages_for(shared) == []
    assert await tokens_of(pool, bob) == [shared]


async def test_an_unregistered_token_that_moved_meanwhile_stays_with_its_new_user(
    pool: asyncpg.Pool, fcm_sender: FcmSender, fake_fcm: FakeFcm, queue: RecordingPushQueue
) -> None:
    shared = tok("race")
    fake_fcm.answer(shared, "unregistered")
    alice = await new_user(pool, ("android", shared))
    notification = await stored(pool, alice)
    bob = await new_user(pool)

    class MovesDuringSend:
        """The real sender; bob registers the token while FCM is answering alice's push."""

        async def send(self, messages: Sequence[Push]) -> list[PushResult]:
            results = await fcm_sender.send(messages)
            async with pool.acquire() as conn:
                await devices.upsert(conn, token=shared, user_id=bob, platform="ios")
            return results

        async def close(self) -> None:
            return None

    delivery = PushDelivery(pool, MovesDuringSend(), queue)
    assert (await delivery.deliver(notification_id=notification.id))["unregistered"] == 1
    assert await tokens_of(pool, alice) == [] and await tokens_of(pool, bob) == [shared]


async def test_no_sender_or_no_notification_sends_nothing(pool: asyncpg.Pool, queue: RecordingPushQueue) -> None:
    user_id = await new_user(pool, ("android", tok("nosender")))
    notification = await stored(pool, user_id)
    zero = {"sent": 0, "unregistered": 0, "retried": 0, "failed": 0}
    assert await PushDelivery(pool, None, queue).deliver(notification_id=notification.id) == zero
    assert await PushDelivery(pool, _Failing(), queue).deliver(notification_id=uuid.uuid4()) == zero
    assert queue.deferred == []


async def test_logs_name_devices_by_hash_only(pool: asyncpg.Pool, delivery: PushDelivery, fake_fcm: FakeFcm) -> None:
    gone, busy, bad = tok("log-gone"), tok("log-busy"), tok("log-bad")
    fake_fcm.answer(gone, "unregistered")
    fake_fcm.answer(busy, "quota_exceeded", retry_after=3)
    fake_fcm.answer(bad, "invalid_argument", field="message.android.ttl")
    user_id = await new_user(pool, ("android", gone), ("android", busy), ("ios", bad))
    notification = await stored(pool, user_id)
    with structlog.testing.capture_logs() as entries:
        summary = await delivery.deliver(notification_id=notification.id)
    assert summary == {"sent": 0, "unregistered": 1, "retried": 1, "failed": 1}
    logged = repr(entries)
    assert "push failed" in logged and "push devices unregistered" in logged and "push retry queued" in logged
    assert token_hash(gone) in logged and token_hash(bad) in logged
    assert not any(t in logged for t in (gone, busy, bad))


async def test_a_batch_stored_elsewhere_is_sent_live_and_pushed_to_who_wants_it(
    pool: asyncpg.Pool, queue: RecordingPushQueue
) -> None:
    pushed = await new_user(pool, ("android", tok("batch")))
    no_device = await new_user(pool)
    push_off = await new_user(pool, ("ios", tok("batch-off")))
    online = await new_user(pool, ("android", tok("batch-online")))
    events = _NoEvents()
    service = NotificationService(pool=pool, events=events, presence=_Offline(online), push=queue)
    await service.update_preferences(push_off, {"broadcast": (None, False)})
    batch = [await stored(pool, u, kind="broadcast") for u in (pushed, no_device, push_off, online)]

    await service.delivered(batch)

    assert events.users == [pushed, no_device, push_off, online]  # every one live
    assert [(d.notification_id, d.tokens, d.attempt) for d in queue.deferred] == [(batch[0].id, None, 1)]


class _NoEvents:
    def __init__(self) -> None:
        self.users: list[uuid.UUID] = []

    async def to_user(self, user_id: uuid.UUID, event: ServerEvent) -> None:
        self.users.append(user_id)

    async def to_room(self, room: str, event: ServerEvent, *, skip_sid: str | None = None) -> None:
        return None

    async def to_rooms(self, rooms: list[str], event: ServerEvent) -> None:
        return None

    async def disconnect_user(self, user_id: uuid.UUID, *, reason: Any) -> None:
        return None


class _Offline:
    """Presence where every user is offline but those named."""

    def __init__(self, *online: uuid.UUID) -> None:
        self._online = set(online)

    async def count(self, user_id: uuid.UUID) -> int:
        return int(user_id in self._online)
