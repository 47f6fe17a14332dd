"""UsageStore on PostgreSQL: the daily quota counter never passes its limit, even concurrently, and a
charge is refunded at most once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date

import asyncpg

from storage.chat import ChatStore
from storage.usage import UsageStore
from tests.storage.factories import make_chat, make_user

store = UsageStore()
DAY = date(2024, 5, 1)


async def test_concurrent_counting_stops_at_the_quota(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)

    async def count() -> int | None:
        async with pool.acquire() as conn, conn.transaction():
            got = await store.count_in_quota(conn, user.id, DAY, 5)
            await asyncio.sleep(0.005)
            return got

    results = await asyncio.gather(*(count() for _ in range(12)))
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4, 5]
    async with pool.acquire() as conn:
        assert (await store.day(conn, user.id, DAY)).messages == 5
        # Another day is counted on its own.
        assert await store.count_in_quota(conn, user.id, date(2024, 5, 2), 5) == 1


async def test_a_charge_is_refunded_once(pool: asyncpg.Pool) -> None:
    chat = ChatStore()
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
        ids = []
        for kind in ("quota", "credit"):
            stored = await chat.insert_user_message(
                conn, session_id=session.id, user_id=user.id, client_id=uuid.uuid4(), content=kind, attachments=[]
            )
            assert stored is not None
            ids.append(stored[0].id)
            await store.record_charge(conn, message_id=stored[0].id, user_id=user.id, kind=kind, day=DAY)
        assert await store.count_in_quota(conn, user.id, DAY, 10) == 1
        await store.count_credit(conn, user.id, DAY)

    async def refund() -> int:
        async with pool.acquire() as conn, conn.transaction():
            claimed = await store.claim_refunds(conn, ids)
            for refund in claimed:
                await store.uncount(conn, refund)
            await asyncio.sleep(0.005)
            return len(claimed)

    assert sorted(await asyncio.gather(*(refund() for _ in range(4)))) == [0, 0, 0, 2]
    async with pool.acquire() as conn:
        day = await store.day(conn, user.id, DAY)
        assert (day.messages, day.credit_messages, day.refunded) == (0, 0, 2)
        assert await store.claim_refunds(conn, ids) == []
