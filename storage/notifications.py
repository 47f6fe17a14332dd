"""NotificationStore and DeviceStore: the `notifications`, `notification_preferences` and `devices`
tables. Methods take the caller's connection; rows in, entities out."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import Device, Notification

_COLUMNS = "id, user_id, kind, title, body, data, read_at, created_at"
_DEVICE_COLUMNS = "token, user_id, platform, created_at, last_seen_at"

INSERT = f"""
INSERT INTO notifications (user_id, kind, title, body, data) VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING {_COLUMNS}
"""
# Keyset pagination on (created_at, id), newest first; served by notifications_user_idx (or the partial
# unread index when $2 is true).
PAGE = f"""
SELECT {_COLUMNS} FROM notifications
WHERE user_id = $1 AND (NOT $2::boolean OR read_at IS NULL)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC LIMIT $5
"""
BY_ID = f"SELECT {_COLUMNS} FROM notifications WHERE id = $1"
UNREAD_COUNT = "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL"
# Marking read twice keeps the first time.
MARK_READ = f"""
UPDATE notifications SET read_at = COALESCE(read_at, now()) WHERE id = $1 AND user_id = $2
RETURNING {_COLUMNS}
"""
READ_ALL = "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL"
PREFERENCES = "SELECT kind, in_app, push FROM notification_preferences WHERE user_id = $1"
PREFERENCE = "SELECT in_app, push FROM notification_preferences WHERE user_id = $1 AND kind = $2"
# NULL keeps the stored value (or the default, true, for a kind without a row).
SET_PREFERENCE = """
INSERT INTO notification_preferences (user_id, kind, in_app, push)
VALUES ($1, $2, COALESCE($3, true), COALESCE($4, true))
ON CONFLICT (user_id, kind) DO UPDATE SET
    in_app = COALESCE($3, notification_preferences.in_app), push = COALESCE($4, notification_preferences.push)
"""
# One statement, so concurrent registrations of one token end with one row, for the last user to register.
# A token new to this user (new, or moved from another user) starts over with created_at = now(): that is
# how `fresh` tells it from a repeated registration.
UPSERT_DEVICE = f"""
INSERT INTO devices (token, user_id, platform) VALUES ($1, $2, $3)
ON CONFLICT (token) DO UPDATE SET
    user_id = EXCLUDED.user_id, platform = EXCLUDED.platform, last_seen_at = now(),
    created_at = CASE WHEN devices.user_id = EXCLUDED.user_id THEN devices.created_at ELSE now() END
RETURNING {_DEVICE_COLUMNS}, (created_at = now()) AS fresh
"""
DELETE_DEVICE = "DELETE FROM devices WHERE token = $1 AND user_id = $2"
DEVICES_OF = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, token"
# Those of the users who have a device and did not turn push off for the kind (no row: on).
PUSH_TARGETS = """
SELECT DISTINCT d.user_id FROM devices d
WHERE d.user_id = ANY($1::uuid[]) AND NOT EXISTS (
    SELECT 1 FROM notification_preferences p WHERE p.user_id = d.user_id AND p.kind = $2 AND NOT p.push)
"""
# Only the user's own rows: a token may have moved to another user since it was read (UPSERT_DEVICE).
DELETE_DEVICES = "DELETE FROM devices WHERE user_id = $1 AND token = ANY($2::text[]) RETURNING token"


def _notification(record: asyncpg.Record) -> Notification:
    return Notification(**dict(record))


class NotificationStore:
    async def insert(
        self, conn: asyncpg.Connection, *, user_id: UUID, kind: str, title: str, body: str, data: dict[str, Any]
    ) -> Notification:
        return _notification(await conn.fetchrow(INSERT, user_id, kind, title, body, data))

    async def get(self, conn: asyncpg.Connection, notification_id: UUID) -> Notification | None:
        record = await conn.fetchrow(BY_ID, notification_id)
        return _notification(record) if record is not None else None

    async def page(
        self,
        conn: asyncpg.Connection,
        user_id: UUID,
        *,
        unread_only: bool,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Notification]:
        at, last_id = before if before is not None else (None, None)
        rows = await conn.fetch(PAGE, user_id, unread_only, at, last_id, limit)
        return [_notification(r) for r in rows]

    async def unread_count(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        return int(await conn.fetchval(UNREAD_COUNT, user_id))

    async def mark_read(self, conn: asyncpg.Connection, notification_id: UUID, user_id: UUID) -> Notification | None:
        record = await conn.fetchrow(MARK_READ, notification_id, user_id)
        return _notification(record) if record is not None else None

    async def read_all(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        status = await conn.execute(READ_ALL, user_id)  # "UPDATE <n>"
        return int(status.split()[-1])

    async def preferences(self, conn: asyncpg.Connection, user_id: UUID) -> dict[str, tuple[bool, bool]]:
        """kind -> (in_app, push), for the kinds the user changed."""
        return {r["kind"]: (r["in_app"], r["push"]) for r in await conn.fetch(PREFERENCES, user_id)}

    async def preference(self, conn: asyncpg.Connection, user_id: UUID, kind: str) -> tuple[bool, bool] | None:
        record = await conn.fetchrow(PREFERENCE, user_id, kind)
        return (record["in_app"], record["push"]) if record is not None else None

    async def set_preference(
        self, conn: asyncpg.Connection, user_id: UUID, kind: str, *, in_app: bool | None, push: bool | None
    ) -> None:
        await conn.execute(SET_PREFERENCE, user_id, kind, in_app, push)


class DeviceStore:
    async def upsert(
        self, conn: asyncpg.Connection, *, token: str, user_id: UUID, platform: str
    ) -> tuple[Device, bool]:
        """The device, now the user's; True when the token was not the user's before."""
        record = dict(await conn.fetchrow(UPSERT_DEVICE, token, user_id, platform))
        fresh = bool(record.pop("fresh"))
        return Device(**record), fresh

    async def delete(self, conn: asyncpg.Connection, token: str, user_id: UUID) -> bool:
        return str(await conn.execute(DELETE_DEVICE, token, user_id)) != "DELETE 0"

    async def of_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[Device]:
        return [Device(**dict(r)) for r in await conn.fetch(DEVICES_OF, user_id)]

    async def push_targets(self, conn: asyncpg.Connection, user_ids: list[UUID], kind: str) -> set[UUID]:
        """Those of `user_ids` who have a device and want pushes of `kind`."""
        return {r["user_id"] for r in await conn.fetch(PUSH_TARGETS, user_ids, kind)}

    async def delete_of_user(self, conn: asyncpg.Connection, user_id: UUID, tokens: list[str]) -> list[str]:
        """Deletes those of `tokens` that are still the user's; returns the ones deleted."""
        return [r["token"] for r in await conn.fetch(DELETE_DEVICES, user_id, tokens)]
