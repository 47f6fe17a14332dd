"""FileStore on PostgreSQL: the storage quota never passes its limit under concurrent uploads (one conditional
UPDATE of the user's row), a file row and its bytes move together, and every blob key that loses its row —
deleted, cascaded with its user, or reserved by an upload that never stored one — ends in the sweep queue."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from core.entities import StoredFile
from storage.files import FileStore
from tests.storage.factories import make_persona, make_user

store = FileStore()


async def new_file(conn: asyncpg.Connection, user_id: uuid.UUID, *, size: int = 100, thumb: bool = True) -> StoredFile:
    key = uuid.uuid4().hex
    return await store.insert(
        conn,
        user_id=user_id,
        category="chat_attachment",
        content_type="image/png",
        size=size,
        stored_bytes=size + (10 if thumb else 0),
        width=4,
        height=3,
        filename="a.png",
        blob_key=f"f/{key}",
        thumb_key=f"t/{key}" if thumb else None,
        etag="e" * 64,
    )


async def sweep_keys(pool: asyncpg.Pool) -> set[str]:
    return {r["key"] for r in await pool.fetch("SELECT key FROM blob_sweep")}


async def test_concurrent_charges_never_pass_the_limit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        assert await store.charge(conn, user.id, 900, limit=1000) == 900

    async def upload() -> bool:
        async with pool.acquire() as conn, conn.transaction():
            charged = await store.charge(conn, user.id, 30, limit=1000)
            await asyncio.sleep(0.01)  # hold the row lock a while, as an upload storing its row does
            return charged is not None

    results = await asyncio.gather(*(upload() for _ in range(20)))
    assert sum(results) == 3  # 900 + 3 * 30 = 990; a fourth would make 1020
    async with pool.acquire() as conn:
        assert await store.storage_used(conn, user.id) == 990
        assert await store.charge(conn, user.id, 10, limit=1000) == 1000  # exactly the limit is allowed
        assert await store.charge(conn, user.id, 1, limit=1000) is None
        assert await store.charge(conn, user.id, 10**9, limit=0) is not None  # 0: no limit


async def test_storage_used_never_below_zero(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        try:
            await store.refund(conn, user.id, 1)
        except asyncpg.CheckViolationError:
            pass
        else:
            raise AssertionError("a refund below zero must fail")


async def test_reserved_keys_are_claimed_by_the_row_or_swept(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        await store.reserve_keys(conn, ["r/kept", "r/lost"], sweep_after_seconds=3600)
        async with conn.transaction():
            await store.insert(
                conn,
                user_id=user.id,
                category="avatar",
                content_type="image/png",
                size=1,
                stored_bytes=1,
                width=1,
                height=1,
                filename="x.png",
                blob_key="r/kept",
                thumb_key=None,
                etag="e",
            )
        keys = await sweep_keys(pool)
        assert "r/kept" not in keys and "r/lost" in keys
        async with conn.transaction():
            assert "r/lost" not in await store.due_keys(conn, limit=100)  # not due for an hour


async def test_deleting_a_file_or_its_user_queues_its_blobs(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        one = await new_file(conn, user.id)
        two = await new_file(conn, user.id, thumb=False)
        persona = await make_persona(conn, user.id)
        await conn.execute("UPDATE personas SET avatar_file_id = $1 WHERE id = $2", two.id, persona.id)
        await conn.execute("UPDATE users SET avatar_file_id = $1 WHERE id = $2", two.id, user.id)
        deleted = await store.delete_owned(conn, one.id, user.id)
        assert deleted is not None and deleted.id == one.id
        assert await store.delete_owned(conn, one.id, user.id) is None
        keys = await sweep_keys(pool)
        assert {one.blob_key, one.thumb_key} <= keys
        other = await make_user(conn)
        assert await store.delete_owned(conn, two.id, other.id) is None  # not theirs
        await conn.execute("DELETE FROM users WHERE id = $1", user.id)  # cascades to the files
        assert two.blob_key in await sweep_keys(pool)
        async with conn.transaction():
            due = await store.due_keys(conn, limit=1000)
            assert {one.blob_key, one.thumb_key, two.blob_key} <= set(due)
            await store.forget_keys(conn, due)
        assert not {one.blob_key, two.blob_key} & await sweep_keys(pool)


async def test_unsent_attachments_go_after_the_grace_and_give_their_bytes_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        assert await store.charge(conn, user.id, 330, limit=0) == 330
        sent, unsent, fresh = [await new_file(conn, user.id) for _ in range(3)]
        await store.mark_attached(conn, [sent.id])
        old = datetime.now(UTC) - timedelta(days=2)
        await conn.execute("UPDATE files SET created_at = $1 WHERE id = ANY($2::uuid[])", old, [sent.id, unsent.id])
        gone = await store.delete_unsent(conn, created_before=datetime.now(UTC) - timedelta(days=1), limit=100)
        assert gone == 1
        remaining = {f.id for f in await store.page(conn, user.id, category=None, before=None, limit=10)}
        assert remaining == {sent.id, fresh.id}
        assert await store.storage_used(conn, user.id) == 330 - unsent.stored_bytes
        assert unsent.blob_key in await sweep_keys(pool)


async def test_pages_by_category_newest_first_without_repeats(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        files = [await new_file(conn, user.id) for _ in range(5)]
        seen: list[uuid.UUID] = []
        before = None
        while True:
            page = await store.page(conn, user.id, category="chat_attachment", before=before, limit=2)
            seen.extend(f.id for f in page)
            if len(page) < 2:
                break
            before = (page[-1].created_at, page[-1].id)
        assert seen == [f.id for f in reversed(files)]
        assert await store.page(conn, user.id, category="avatar", before=None, limit=10) == []
        assert {f.id for f in await store.owned_many(conn, [f.id for f in files[:2]], user.id)} == {
            f.id for f in files[:2]
        }
