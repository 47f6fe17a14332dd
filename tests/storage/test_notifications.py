"""NotificationStore and DeviceStore on PostgreSQL: the newest-first keyset pages (also unread only),
marking read only one's own and keeping the first read time, preferences upserted field by field, and a
device token that moves to the newest user who registers it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from storage.notifications import DeviceStore, NotificationStore
from tests.storage.factories import make_user

store, devices = NotificationStore(), DeviceStore()


async def new_user(pool: asyncpg.Pool) -> uuid.UUID:
    async with pool.acquire() as conn:
        return (await make_user(conn)).id


async def test_pages_newest_first_and_unread_only(pool: asyncpg.Pool) -> None:
    user_id, other = await new_user(pool), await new_user(pool)
    async with pool.acquire() as conn, conn.transaction():  # one transaction: one now(), order kept anyway
        made = [
            await store.insert(conn, user_id=user_id, kind="credits", title=f"t{i}", body="b", data={"i": i})
            for i in range(5)
        ]
        await store.insert(conn, user_id=other, kind="broadcast", title="theirs", body="b", data={})
    assert made[0].data == {"i": 0} and made[0].read_at is None
    async with pool.acquire() as conn:
        first = await store.page(conn, user_id, unread_only=False, before=None, limit=2)
        assert [n.title for n in first] == ["t4", "t3"]
        rest = await store.page(conn, user_id, unread_only=False, before=(first[-1].created_at, first[-1].id), limit=10)
        assert [n.title for n in rest] == ["t2", "t1", "t0"]
        assert await store.mark_read(conn, made[1].id, user_id) is not None
        assert await store.mark_read(conn, made[1].id, other) is None  # not theirs
        unread = await store.page(conn, user_id, unread_only=True, before=None, limit=10)
        assert [n.title for n in unread] == ["t4", "t3", "t2", "t0"]
        assert await store.unread_count(conn, user_id) == 4
        assert await store.read_all(conn, user_id) == 4
        assert await store.read_all(conn, user_id) == 0
        assert await store.unread_count(conn, user_id) == 0
        assert await store.unread_count(conn, other) == 1


async def test_marking_read_again_keeps_the_first_time(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool)
    async with pool.acquire() as conn:
        made = await store.insert(conn, user_id=user_id, kind="job_done", title="t", body="b", data={})
        first = await store.mark_read(conn, made.id, user_id)
        await asyncio.sleep(0.01)
        again = await store.mark_read(conn, made.id, user_id)
    assert first is not None and again is not None and first.read_at is not None
    assert again.read_at == first.read_at


async def test_preferences_change_field_by_field(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool)
    async with pool.acquire() as conn:
        assert await store.preference(conn, user_id, "credits") is None
        await store.set_preference(conn, user_id, "credits", in_app=None, push=False)
        assert await store.preference(conn, user_id, "credits") == (True, False)
        await store.set_preference(conn, user_id, "credits", in_app=False, push=None)
        assert await store.preferences(conn, user_id) == {"credits": (False, False)}


async def test_a_token_moves_to_the_newest_user(pool: asyncpg.Pool) -> None:
    alice, bob = await new_user(pool), await new_user(pool)
    token = f"tok-{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        device, fresh = await devices.upsert(conn, token=token, user_id=alice, platform="android")
        assert fresh and device.user_id == alice
        again, fresh = await devices.upsert(conn, token=token, user_id=alice, platform="android")
        assert not fresh and again.created_at == device.created_at
        moved, fresh = await devices.upsert(conn, token=token, user_id=bob, platform="ios")
        assert fresh and moved.user_id == bob and moved.platform == "ios"
        assert await devices.of_user(conn, alice) == []
        assert [d.token for d in await devices.of_user(conn, bob)] == [token]
        assert not await devices.delete(conn, token, alice)
        assert await devices.delete(conn, token, bob)
        assert await devices.of_user(conn, bob) == []


async def test_concurrent_registrations_leave_one_row(pool: asyncpg.Pool) -> None:
    users = [await new_user(pool) for _ in range(5)]
    token = f"tok-{uuid.uuid4().hex}"

    async def register(user_id: uuid.UUID) -> None:
        async with pool.acquire() as conn:
            await devices.upsert(conn, token=token, user_id=user_id, platform="web")

    await asyncio.gather(*(register(u) for u in users))
    assert await pool.fetchval("SELECT count(*) FROM devices WHERE token = $1", token) == 1


async def test_rows_go_with_their_user(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool)
    async with pool.acquire() as conn:
        await store.insert(conn, user_id=user_id, kind="credits", title="t", body="b", data={})
        await store.set_preference(conn, user_id, "credits", in_app=False, push=False)
        await devices.upsert(conn, token=f"tok-{uuid.uuid4().hex}", user_id=user_id, platform="web")
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        for table in ("notifications", "notification_preferences", "devices"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user_id) == 0
