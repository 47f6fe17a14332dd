"""CreditStore on PostgreSQL: the balance never goes below zero (the conditional UPDATE and the CHECKs),
not even under concurrent spending; an idempotency key applies once; the ledger always sums to the balance."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from core.entities import CreditChange
from storage.credits import CreditStore, InsufficientCredits
from tests.storage.factories import make_user, wait_until_blocked

store = CreditStore()


async def apply(pool: asyncpg.Pool, user_id: uuid.UUID, delta: int, key: str | None = None) -> tuple[int, bool]:
    """One change in its own transaction, as the credit service makes it."""
    async with pool.acquire() as conn, conn.transaction():
        change = CreditChange(user_id=user_id, delta=delta, reason="test", idempotency_key=key or str(uuid.uuid4()))
        return await store.apply(conn, change)


async def new_user(pool: asyncpg.Pool, balance: int = 0) -> uuid.UUID:
    async with pool.acquire() as conn:
        user = await make_user(conn)
    if balance:
        assert await apply(pool, user.id, balance, "grant") == (balance, True)
    return user.id


async def ledger_rows(pool: asyncpg.Pool, user_id: uuid.UUID) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", user_id))


async def test_grant_spend_and_the_ledger(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool)
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 0
    assert await apply(pool, user_id, 100, "purchase-1") == (100, True)
    async with pool.acquire() as conn, conn.transaction():
        assert await store.apply(
            conn,
            CreditChange(
                user_id=user_id, delta=-30, reason="message", idempotency_key="msg-1", ref_type="message", ref_id="m1"
            ),
        ) == (70, True)
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 70
        assert await store.ledger_sum(conn, user_id) == 70
        entries = await store.ledger(conn, user_id, before_id=None, limit=10)
        assert [(e.delta, e.balance_after, e.reason, e.idempotency_key) for e in entries] == [
            (-30, 70, "message", "msg-1"),
            (100, 100, "test", "purchase-1"),
        ]
        assert (entries[0].ref_type, entries[0].ref_id) == ("message", "m1")
        older = await store.ledger(conn, user_id, before_id=entries[0].id, limit=10)
        assert [e.id for e in older] == [entries[1].id]


async def test_overspending_is_refused_and_changes_nothing(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool, 5)
    with pytest.raises(InsufficientCredits):
        await apply(pool, user_id, -6, "too-much")
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 5
        assert await store.ledger_sum(conn, user_id) == 5
    assert await ledger_rows(pool, user_id) == 1
    # The refused key was not used up: it applies once the balance covers it.
    await apply(pool, user_id, 1, "top-up")
    assert await apply(pool, user_id, -6, "too-much") == (0, True)


async def test_the_balance_and_ledger_checks_refuse_what_the_update_would_not(pool: asyncpg.Pool) -> None:
    """The CHECKs hold even for a write that skips the conditional UPDATE."""
    user_id = await new_user(pool, 3)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE users SET credit_balance = credit_balance - 4 WHERE id = $1", user_id)
    with pytest.raises(asyncpg.CheckViolationError):  # a zero delta is no ledger entry
        await apply(pool, user_id, 0, "nothing")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO credit_ledger (user_id, delta, balance_after, reason, idempotency_key)"
            " VALUES ($1, -9, -6, 'bad', 'negative-after')",
            user_id,
        )
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 3
        assert await store.ledger_sum(conn, user_id) == 3


async def test_concurrent_spending_never_goes_below_zero(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool, 10)

    async def spend() -> bool:
        try:
            async with pool.acquire() as conn, conn.transaction():
                change = CreditChange(user_id=user_id, delta=-1, reason="message", idempotency_key=str(uuid.uuid4()))
                await store.apply(conn, change)
                await asyncio.sleep(0.005)  # hold the user row while the others queue for it
            return True
        except InsufficientCredits:
            return False

    results = await asyncio.gather(*(spend() for _ in range(25)))
    assert results.count(True) == 10
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 0
        assert await store.ledger_sum(conn, user_id) == 0
        balances = [e.balance_after for e in await store.ledger(conn, user_id, before_id=None, limit=100)]
    assert balances == list(range(0, 11))  # newest first: every spend saw the one before it


async def test_an_idempotency_key_applies_once(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool, 20)
    assert await apply(pool, user_id, -5, "charge-7") == (15, True)
    assert await apply(pool, user_id, -5, "charge-7") == (15, False)
    assert await apply(pool, user_id, -9, "charge-7") == (15, False)  # the key, not the amount, decides
    assert await ledger_rows(pool, user_id) == 2
    # Keys are per user: another user's same key is theirs to use.
    other = await new_user(pool, 20)
    assert await apply(pool, other, -5, "charge-7") == (15, True)


async def test_concurrent_uses_of_one_key_apply_once(pool: asyncpg.Pool) -> None:
    user_id = await new_user(pool, 50)

    async def charge() -> bool | None:
        try:
            async with pool.acquire() as conn, conn.transaction():
                _, applied = await store.apply(
                    conn, CreditChange(user_id=user_id, delta=-7, reason="message", idempotency_key="same-key")
                )
                await asyncio.sleep(0.005)
            return applied
        except asyncpg.UniqueViolationError:  # raced the winner: this transaction was rolled back
            return None

    results = await asyncio.gather(*(charge() for _ in range(8)))
    assert results.count(True) == 1
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 43
        assert await store.ledger_sum(conn, user_id) == 43
    assert await ledger_rows(pool, user_id) == 2


async def test_a_racing_duplicate_key_rolls_its_update_back(pool: asyncpg.Pool) -> None:
    """The second transaction passes the key lookup before the first commits: its balance update then runs,
    and only the failed ledger insert undoes it (the caller rolls back)."""
    user_id = await new_user(pool, 10)
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        assert await store.apply(first, CreditChange(user_id=user_id, delta=-4, reason="m", idempotency_key="k")) == (
            6,
            True,
        )
        second_tx = second.transaction()
        await second_tx.start()
        racing = asyncio.create_task(
            store.apply(second, CreditChange(user_id=user_id, delta=-4, reason="m", idempotency_key="k"))
        )
        await wait_until_blocked(pool, second.get_server_pid())  # on the user row the first one updated
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await racing
        await second_tx.rollback()
    async with pool.acquire() as conn:
        assert await store.balance(conn, user_id) == 6
        assert await store.ledger_sum(conn, user_id) == 6
