"""UsageStore: the daily AI-message counters and what each message spent (for exact refunds), plus the
read-side queries behind /usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

import asyncpg

# Counted only while under the limit: the check and the increment are one statement, so concurrent
# sends can never push the day past its quota.
COUNT_IN_QUOTA = """
INSERT INTO usage_daily (user_id, day, messages) VALUES ($1, $2, 1)
ON CONFLICT (user_id, day) DO UPDATE SET messages = usage_daily.messages + 1
WHERE usage_daily.messages < $3
RETURNING messages
"""
COUNT_CREDIT = """
INSERT INTO usage_daily (user_id, day, credit_messages) VALUES ($1, $2, 1)
ON CONFLICT (user_id, day) DO UPDATE SET credit_messages = usage_daily.credit_messages + 1
"""
COUNT_UNLIMITED = """
INSERT INTO usage_daily (user_id, day, messages) VALUES ($1, $2, 1)
ON CONFLICT (user_id, day) DO UPDATE SET messages = usage_daily.messages + 1
"""
RECORD_CHARGE = "INSERT INTO message_charges (message_id, user_id, kind, day, turn) VALUES ($1, $2, $3, $4, $5)"
# Claims the charges to give back: a charge is refunded at most once, whoever asks twice.
CLAIM_REFUNDS = """
UPDATE message_charges SET refunded_at = now()
WHERE message_id = ANY($1::uuid[]) AND turn = 0 AND refunded_at IS NULL
RETURNING message_id, user_id, kind, day, turn
"""
CLAIM_TURN_REFUND = """
UPDATE message_charges SET refunded_at = now()
WHERE message_id = $1 AND turn = $2 AND refunded_at IS NULL
RETURNING message_id, user_id, kind, day, turn
"""
UNCOUNT_QUOTA = """
UPDATE usage_daily SET messages = GREATEST(messages - 1, 0), refunded = refunded + 1
WHERE user_id = $1 AND day = $2
"""
UNCOUNT_CREDIT = """
UPDATE usage_daily SET credit_messages = GREATEST(credit_messages - 1, 0), refunded = refunded + 1
WHERE user_id = $1 AND day = $2
"""
DAY = "SELECT messages, credit_messages, refunded FROM usage_daily WHERE user_id = $1 AND day = $2"
HISTORY = """
SELECT day, messages, credit_messages, refunded FROM usage_daily
WHERE user_id = $1 AND day >= $2 ORDER BY day
"""
# Messages by local hour of day, for "peak hours".
BY_HOUR = """
SELECT extract(hour FROM m.created_at AT TIME ZONE $2)::int AS hour, count(*) AS messages
FROM messages m JOIN chat_sessions s ON s.id = m.session_id
WHERE s.user_id = $1 AND m.role = 'user' AND m.created_at >= $3
GROUP BY 1 ORDER BY 1
"""
TOKENS = """
SELECT COALESCE(sum((m.usage->>'total_tokens')::bigint), 0) AS tokens, count(*) AS replies
FROM messages m JOIN chat_sessions s ON s.id = m.session_id
WHERE s.user_id = $1 AND m.role = 'assistant' AND m.status IN ('complete', 'stopped') AND m.created_at >= $2
"""


@dataclass(frozen=True)
class DayUsage:
    day: date
    messages: int
    credit_messages: int
    refunded: int


@dataclass(frozen=True)
class ClaimedRefund:
    message_id: UUID
    user_id: UUID
    kind: str
    day: date
    turn: int = 0


class UsageStore:
    async def count_in_quota(self, conn: asyncpg.Connection, user_id: UUID, day: date, limit: int) -> int | None:
        """The day's new count, or None when the quota is already used up."""
        value = await conn.fetchval(COUNT_IN_QUOTA, user_id, day, limit)
        return int(value) if value is not None else None

    async def count_credit(self, conn: asyncpg.Connection, user_id: UUID, day: date) -> None:
        await conn.execute(COUNT_CREDIT, user_id, day)

    async def count_unlimited(self, conn: asyncpg.Connection, user_id: UUID, day: date) -> None:
        await conn.execute(COUNT_UNLIMITED, user_id, day)

    async def record_charge(
        self, conn: asyncpg.Connection, *, message_id: UUID, user_id: UUID, kind: str, day: date, turn: int = 0
    ) -> None:
        await conn.execute(RECORD_CHARGE, message_id, user_id, kind, day, turn)

    async def claim_refunds(self, conn: asyncpg.Connection, message_ids: list[UUID]) -> list[ClaimedRefund]:
        """The sends' charges (turn 0) of these messages not refunded yet."""
        return [ClaimedRefund(**dict(r)) for r in await conn.fetch(CLAIM_REFUNDS, message_ids)]

    async def claim_turn_refund(self, conn: asyncpg.Connection, message_id: UUID, turn: int) -> list[ClaimedRefund]:
        return [ClaimedRefund(**dict(r)) for r in await conn.fetch(CLAIM_TURN_REFUND, message_id, turn)]

    async def uncount(self, conn: asyncpg.Connection, refund: ClaimedRefund) -> None:
        query = UNCOUNT_CREDIT if refund.kind == "credit" else UNCOUNT_QUOTA
        await conn.execute(query, refund.user_id, refund.day)

    async def day(self, conn: asyncpg.Connection, user_id: UUID, day: date) -> DayUsage:
        record = await conn.fetchrow(DAY, user_id, day)
        if record is None:
            return DayUsage(day, 0, 0, 0)
        return DayUsage(day, record["messages"], record["credit_messages"], record["refunded"])

    async def history(self, conn: asyncpg.Connection, user_id: UUID, since: date) -> list[DayUsage]:
        return [DayUsage(**dict(r)) for r in await conn.fetch(HISTORY, user_id, since)]

    async def by_hour(self, conn: asyncpg.Connection, user_id: UUID, timezone: str, since: datetime) -> dict[int, int]:
        return {r["hour"]: r["messages"] for r in await conn.fetch(BY_HOUR, user_id, timezone, since)}

    async def tokens(self, conn: asyncpg.Connection, user_id: UUID, since: datetime) -> tuple[int, int]:
        record = await conn.fetchrow(TOKENS, user_id, since)
        return int(record["tokens"]), int(record["replies"])
