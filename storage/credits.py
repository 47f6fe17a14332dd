"""CreditStore: the balance on the user row and the append-only ledger beside it. Every change is one
conditional UPDATE plus one ledger row with a per-user idempotency key, in the caller's transaction."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from core.entities import CreditChange, LedgerEntry

# Spending only succeeds while the balance covers it: the check and the write are one statement.
APPLY = """
UPDATE users SET credit_balance = credit_balance + $2
WHERE id = $1 AND credit_balance + $2 >= 0
RETURNING credit_balance
"""
INSERT_ENTRY = """
INSERT INTO credit_ledger (user_id, delta, balance_after, reason, idempotency_key, ref_type, ref_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (user_id, idempotency_key) DO NOTHING
RETURNING id
"""
ENTRY_BY_KEY = "SELECT id FROM credit_ledger WHERE user_id = $1 AND idempotency_key = $2"
BALANCE = "SELECT credit_balance FROM users WHERE id = $1"
LEDGER_PAGE = """
SELECT id, delta, balance_after, reason, idempotency_key, ref_type, ref_id, created_at FROM credit_ledger
WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3
"""
LEDGER_SUM = "SELECT COALESCE(sum(delta), 0) FROM credit_ledger WHERE user_id = $1"


class InsufficientCredits(Exception):
    pass


class CreditStore:
    async def apply(
        self,
        conn: asyncpg.Connection,
        change: CreditChange,
    ) -> tuple[int, bool]:
        """Add `change.delta` exactly once per idempotency key. Returns (balance, applied); raises
        InsufficientCredits when spending more than the balance. Must run in a transaction."""
        c = change
        if await conn.fetchval(ENTRY_BY_KEY, c.user_id, c.idempotency_key) is not None:
            return await self.balance(conn, c.user_id), False
        balance = await conn.fetchval(APPLY, c.user_id, c.delta)
        if balance is None:
            raise InsufficientCredits
        inserted = await conn.fetchval(
            INSERT_ENTRY, c.user_id, c.delta, balance, c.reason, c.idempotency_key, c.ref_type, c.ref_id
        )
        if inserted is None:
            # A concurrent transaction applied the same key first: undo ours by failing the transaction.
            raise asyncpg.UniqueViolationError("duplicate credit idempotency key")
        return int(balance), True

    async def balance(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        return int(await conn.fetchval(BALANCE, user_id) or 0)

    async def ledger(
        self, conn: asyncpg.Connection, user_id: UUID, *, before_id: int | None, limit: int
    ) -> list[LedgerEntry]:
        return [LedgerEntry(**dict(r)) for r in await conn.fetch(LEDGER_PAGE, user_id, before_id, limit)]

    async def ledger_sum(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        return int(await conn.fetchval(LEDGER_SUM, user_id))
