"""RefreshTokenStore on PostgreSQL: rotation rows (revoked and replaced), family and user revocation, what
counts as a revoked family, and the row lock a rotation takes."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from storage.refresh_tokens import RefreshTokenRow, RefreshTokenStore
from tests.storage.factories import make_user, wait_until_blocked

store = RefreshTokenStore()


async def issue(conn: asyncpg.Connection, user_id: uuid.UUID, family_id: uuid.UUID) -> RefreshTokenRow:
    now = datetime.now(UTC)
    return await store.insert(
        conn,
        user_id=user_id,
        family_id=family_id,
        token_hash=os.urandom(32),
        created_at=now,
        expires_at=now + timedelta(days=30),
    )


async def rotate(conn: asyncpg.Connection, row: RefreshTokenRow) -> RefreshTokenRow:
    """What AuthService.refresh does with a live token: a successor in the family, the old row marked."""
    async with conn.transaction():
        locked = await store.by_hash_for_update(conn, row.token_hash)
        assert locked is not None and locked.revoked_at is None
        successor = await issue(conn, row.user_id, row.family_id)
        await store.mark_rotated(conn, row.id, replaced_by=successor.id)
    return successor


async def test_rotation_marks_the_old_row_and_keeps_the_family_live(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        family = uuid.uuid4()
        t1 = await issue(conn, user.id, family)
        assert (t1.user_id, t1.family_id, t1.revoked_at, t1.replaced_by) == (user.id, family, None, None)
        t2 = await rotate(conn, t1)
        t3 = await rotate(conn, t2)
        old = await store.by_hash_for_update(conn, t1.token_hash)
        assert old is not None and old.revoked_at is not None and old.replaced_by == t2.id
        middle = await store.by_id_for_update(conn, t2.id)
        assert middle is not None and middle.replaced_by == t3.id
        current = await store.by_hash_for_update(conn, t3.token_hash)
        assert current == t3
        # Rotation is no revocation.
        assert not await store.family_revoked(conn, family)
        assert family not in await store.revoked_families_since(conn, 3600)
        assert await store.by_hash_for_update(conn, os.urandom(32)) is None
        assert await store.by_id_for_update(conn, uuid.uuid4()) is None


async def test_revoking_a_family_revokes_its_live_token_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        family, other_family = uuid.uuid4(), uuid.uuid4()
        t1 = await issue(conn, user.id, family)
        t2 = await rotate(conn, t1)
        other = await issue(conn, user.id, other_family)
        rotated_at = (await store.by_id_for_update(conn, t1.id)).revoked_at  # type: ignore[union-attr]

        await store.revoke_family(conn, family)
        assert await store.family_revoked(conn, family)
        revoked = await store.by_id_for_update(conn, t2.id)
        assert revoked is not None and revoked.revoked_at is not None and revoked.replaced_by is None
        # The rotated row keeps when it was rotated (only live rows are revoked).
        assert (await store.by_id_for_update(conn, t1.id)).revoked_at == rotated_at  # type: ignore[union-attr]
        # The user's other session is untouched.
        assert not await store.family_revoked(conn, other_family)
        assert (await store.by_id_for_update(conn, other.id)).revoked_at is None  # type: ignore[union-attr]

        since = await store.revoked_families_since(conn, 3600)
        assert since[family] == revoked.revoked_at
        assert other_family not in since


async def test_revoking_a_user_revokes_every_family_of_theirs_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        me, someone = await make_user(conn), await make_user(conn)
        mine = [uuid.uuid4(), uuid.uuid4()]
        for family in mine:
            await issue(conn, me.id, family)
        theirs = uuid.uuid4()
        await issue(conn, someone.id, theirs)
        await store.revoke_user(conn, me.id)
        assert [await store.family_revoked(conn, f) for f in mine] == [True, True]
        assert not await store.family_revoked(conn, theirs)
        assert set(mine) <= set(await store.revoked_families_since(conn, 3600))


async def test_revoked_families_since_looks_back_only_so_far(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        family = uuid.uuid4()
        row = await issue(conn, user.id, family)
        await store.revoke_family(conn, family)
        await conn.execute("UPDATE refresh_tokens SET revoked_at = now() - interval '2 hours' WHERE id = $1", row.id)
        assert family in await store.revoked_families_since(conn, 3 * 3600)
        assert family not in await store.revoked_families_since(conn, 3600)


async def test_a_token_hash_is_stored_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        row = await issue(conn, user.id, uuid.uuid4())
        now = datetime.now(UTC)
        with pytest.raises(asyncpg.UniqueViolationError):
            await store.insert(
                conn,
                user_id=user.id,
                family_id=uuid.uuid4(),
                token_hash=row.token_hash,
                created_at=now,
                expires_at=now,
            )


async def test_two_refreshes_of_one_token_are_serialised_by_the_row_lock(pool: asyncpg.Pool) -> None:
    """The second refresh reads the row only after the first committed, so it sees the token rotated."""
    async with pool.acquire() as conn:
        user = await make_user(conn)
        row = await issue(conn, user.id, uuid.uuid4())
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        assert await store.by_hash_for_update(first, row.token_hash) is not None
        successor = await issue(first, user.id, row.family_id)
        await store.mark_rotated(first, row.id, replaced_by=successor.id)
        async with second.transaction():
            racing = asyncio.create_task(store.by_hash_for_update(second, row.token_hash))
            await wait_until_blocked(pool, second.get_server_pid())
            await tx.commit()
            seen = await racing
        assert seen is not None and seen.replaced_by == successor.id and seen.revoked_at is not None
