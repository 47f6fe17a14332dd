"""FileStore: the `files` table, the per-user `storage_used` counter it is counted against, and the
`blob_sweep` queue of blob keys to delete. Methods take the caller's connection (the caller owns the
transaction): a file row, its quota and its sweep entries change together or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import StoredFile

_COLUMNS = (
    "id, user_id, category, content_type, size, stored_bytes, width, height, filename, blob_key, thumb_key,"
    " etag, attached_at, created_at"
)

# Blob keys an upload is about to write: swept after `$2` seconds unless the file row takes them first.
RESERVE_KEYS = """
INSERT INTO blob_sweep (key, due_at) SELECT k, now() + make_interval(secs => $2) FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO NOTHING
"""
CLAIM_KEYS = "DELETE FROM blob_sweep WHERE key = ANY($1::text[])"
# The quota: one conditional update of the user's row. Concurrent uploads queue on the row lock and each
# sees the others' bytes, so together they never pass the limit. $3 = 0: no limit.
CHARGE = """
UPDATE users SET storage_used = storage_used + $2
WHERE id = $1 AND ($3::bigint = 0 OR storage_used + $2 <= $3)
RETURNING storage_used
"""
REFUND = "UPDATE users SET storage_used = storage_used - $2 WHERE id = $1"
STORAGE_USED = "SELECT storage_used FROM users WHERE id = $1"
INSERT = f"""
INSERT INTO files (user_id, category, content_type, size, stored_bytes, width, height, filename, blob_key,
                   thumb_key, etag)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING {_COLUMNS}
"""
OWNED = f"SELECT {_COLUMNS} FROM files WHERE id = $1 AND user_id = $2"
BY_ID = f"SELECT {_COLUMNS} FROM files WHERE id = $1"
OWNED_MANY = f"SELECT {_COLUMNS} FROM files WHERE id = ANY($1::uuid[]) AND user_id = $2"
# Keyset pagination on (created_at, id), newest first; served by files_user_idx.
PAGE = f"""
SELECT {_COLUMNS} FROM files
WHERE user_id = $1 AND ($2::text IS NULL OR category = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC LIMIT $5
"""
DELETE_OWNED = f"DELETE FROM files WHERE id = $1 AND user_id = $2 RETURNING {_COLUMNS}"
MARK_ATTACHED = "UPDATE files SET attached_at = now() WHERE id = ANY($1::uuid[]) AND attached_at IS NULL"
# Chat attachments never sent within the grace period: deleted with their bytes given back, per user, in one
# statement (the rows' trigger queues their blobs for the sweep).
DELETE_UNSENT = """
WITH gone AS (
    DELETE FROM files WHERE id IN (
        SELECT id FROM files
        WHERE category = 'chat_attachment' AND attached_at IS NULL AND created_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING user_id, stored_bytes
), per_user AS (
    SELECT user_id, sum(stored_bytes) AS bytes, count(*) AS n FROM gone GROUP BY user_id
), refunded AS (
    UPDATE users SET storage_used = storage_used - per_user.bytes FROM per_user WHERE users.id = per_user.user_id
    RETURNING per_user.n
)
SELECT COALESCE(sum(n), 0) FROM refunded
"""
# Keys due for deletion, locked so that two sweepers never take the same ones.
DUE_KEYS = """
SELECT key FROM blob_sweep WHERE due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""
# A key is only forgotten when no file row uses it (a reserved key the upload then claimed is gone already).
FORGET_KEYS = "DELETE FROM blob_sweep WHERE key = ANY($1::text[])"


def _row(record: asyncpg.Record | None) -> StoredFile | None:
    return StoredFile(**dict(record)) if record is not None else None


class FileStore:
    async def reserve_keys(self, conn: asyncpg.Connection, keys: Sequence[str], *, sweep_after_seconds: float) -> None:
        await conn.execute(RESERVE_KEYS, list(keys), sweep_after_seconds)

    async def charge(self, conn: asyncpg.Connection, user_id: UUID, nbytes: int, *, limit: int) -> int | None:
        """Count `nbytes` more against the user's storage; None (and nothing counted) past `limit` (0: none)."""
        used = await conn.fetchval(CHARGE, user_id, nbytes, limit)
        return int(used) if used is not None else None

    async def refund(self, conn: asyncpg.Connection, user_id: UUID, nbytes: int) -> None:
        await conn.execute(REFUND, user_id, nbytes)

    async def storage_used(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        return int(await conn.fetchval(STORAGE_USED, user_id) or 0)

    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: UUID,
        category: str,
        content_type: str,
        size: int,
        stored_bytes: int,
        width: int | None,
        height: int | None,
        filename: str,
        blob_key: str,
        thumb_key: str | None,
        etag: str,
    ) -> StoredFile:
        """Also takes the row's keys off the sweep queue: from now on the row owns them."""
        record = await conn.fetchrow(
            INSERT,
            user_id,
            category,
            content_type,
            size,
            stored_bytes,
            width,
            height,
            filename,
            blob_key,
            thumb_key,
            etag,
        )
        await conn.execute(CLAIM_KEYS, [k for k in (blob_key, thumb_key) if k])
        row = _row(record)
        assert row is not None
        return row

    async def owned(self, conn: asyncpg.Connection, file_id: UUID, user_id: UUID) -> StoredFile | None:
        return _row(await conn.fetchrow(OWNED, file_id, user_id))

    async def get(self, conn: asyncpg.Connection, file_id: UUID) -> StoredFile | None:
        return _row(await conn.fetchrow(BY_ID, file_id))

    async def owned_many(self, conn: asyncpg.Connection, file_ids: Sequence[UUID], user_id: UUID) -> list[StoredFile]:
        return [StoredFile(**dict(r)) for r in await conn.fetch(OWNED_MANY, list(file_ids), user_id)]

    async def page(
        self,
        conn: asyncpg.Connection,
        user_id: UUID,
        *,
        category: str | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[StoredFile]:
        at, last_id = before if before is not None else (None, None)
        return [StoredFile(**dict(r)) for r in await conn.fetch(PAGE, user_id, category, at, last_id, limit)]

    async def delete_owned(self, conn: asyncpg.Connection, file_id: UUID, user_id: UUID) -> StoredFile | None:
        """The deleted row (its blobs are queued for the sweep by the table's trigger), or None."""
        return _row(await conn.fetchrow(DELETE_OWNED, file_id, user_id))

    async def mark_attached(self, conn: asyncpg.Connection, file_ids: Sequence[UUID]) -> None:
        await conn.execute(MARK_ATTACHED, list(file_ids))

    async def delete_unsent(self, conn: asyncpg.Connection, *, created_before: datetime, limit: int) -> int:
        return int(await conn.fetchval(DELETE_UNSENT, created_before, limit))

    async def due_keys(self, conn: asyncpg.Connection, *, limit: int) -> list[str]:
        """Keys whose blobs should go now, locked until the caller's transaction ends."""
        return [r["key"] for r in await conn.fetch(DUE_KEYS, limit)]

    async def forget_keys(self, conn: asyncpg.Connection, keys: Sequence[str]) -> None:
        await conn.execute(FORGET_KEYS, list(keys))
