"""RetentionStore: deleting what the plans and housekeeping say is no longer kept. Deletes run in
batches so no statement holds its locks for long."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

# Messages older than $2 in the sessions of users currently on plan $1, at most $3 of them.
DELETE_OLD_MESSAGES = """
DELETE FROM messages WHERE id IN (
    SELECT m.id FROM messages m
    JOIN chat_sessions s ON s.id = m.session_id
    JOIN users u ON u.id = s.user_id
    WHERE u.plan = $1 AND m.created_at < $2
    LIMIT $3
)
"""
PRUNE_USAGE = (
    "DELETE FROM usage_daily WHERE (user_id, day) IN (SELECT user_id, day FROM usage_daily WHERE day < $1 LIMIT $2)"
)


class RetentionStore:
    async def delete_old_messages(self, conn: asyncpg.Connection, *, plan: str, before: datetime, limit: int) -> int:
        return _count(await conn.execute(DELETE_OLD_MESSAGES, plan, before, limit))

    async def prune_usage(self, conn: asyncpg.Connection, *, before: date, limit: int) -> int:
        return _count(await conn.execute(PRUNE_USAGE, before, limit))


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])
