"""BroadcastStore: who an admin broadcast reaches, and its notifications stored a batch at a time."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from core.entities import Notification

# Users the broadcast is for, in id order (keyset): not banned, and of the plan asked ('all': any).
AUDIENCE_PAGE = """
SELECT id FROM users
WHERE banned_at IS NULL AND ($1::text = 'all' OR plan = $1) AND ($2::uuid IS NULL OR id > $2)
ORDER BY id LIMIT $3
"""
AUDIENCE_SIZE = "SELECT count(*) FROM users WHERE banned_at IS NULL AND ($1::text = 'all' OR plan = $1)"
# One statement per batch. Skipped: users who turned in-app broadcasts off, and users who already have this
# broadcast (a retried attempt resumes without sending anything twice).
INSERT_BATCH = """
INSERT INTO notifications (user_id, kind, title, body, data)
SELECT u, 'broadcast', $2, $3, $4::jsonb FROM unnest($1::uuid[]) AS u
WHERE NOT EXISTS (
        SELECT 1 FROM notification_preferences p WHERE p.user_id = u AND p.kind = 'broadcast' AND NOT p.in_app)
  AND NOT EXISTS (
        SELECT 1 FROM notifications n WHERE n.user_id = u AND n.kind = 'broadcast' AND n.data ->> 'broadcast_id' = $5)
RETURNING id, user_id, kind, title, body, data, read_at, created_at
"""


class BroadcastStore:
    async def audience_page(
        self, conn: asyncpg.Connection, audience: str, *, after: UUID | None, limit: int
    ) -> list[UUID]:
        return [r["id"] for r in await conn.fetch(AUDIENCE_PAGE, audience, after, limit)]

    async def audience_size(self, conn: asyncpg.Connection, audience: str) -> int:
        return int(await conn.fetchval(AUDIENCE_SIZE, audience))

    async def insert_batch(
        self,
        conn: asyncpg.Connection,
        user_ids: list[UUID],
        *,
        title: str,
        body: str,
        data: dict[str, Any],
        broadcast_id: str,
    ) -> list[Notification]:
        rows = await conn.fetch(INSERT_BATCH, user_ids, title, body, data, broadcast_id)
        return [Notification(**dict(r)) for r in rows]
