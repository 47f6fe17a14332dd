"""RefreshTokenStore: hashed refresh tokens grouped in rotation families (a family is one session)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

_COLUMNS = "id, user_id, family_id, token_hash, created_at, expires_at, revoked_at, replaced_by"

INSERT = f"""
INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}
"""
BY_HASH_FOR_UPDATE = f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE"
BY_ID_FOR_UPDATE = f"SELECT {_COLUMNS} FROM refresh_tokens WHERE id = $1 FOR UPDATE"
MARK_ROTATED = "UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE id = $1"
REVOKE_FAMILY = "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL"
REVOKE_USER = "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
# A family is revoked when a token in it was revoked without being rotated (logout, reuse, logout-all):
# rotation sets replaced_by, revocation does not.
FAMILY_REVOKED = """
SELECT EXISTS (
    SELECT 1 FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NOT NULL AND replaced_by IS NULL
)
"""
REVOKED_FAMILIES_SINCE = """
SELECT family_id, max(revoked_at) AS revoked_at FROM refresh_tokens
WHERE revoked_at > now() - make_interval(secs => $1) AND replaced_by IS NULL
GROUP BY family_id
"""


@dataclass(frozen=True)
class RefreshTokenRow:
    id: UUID
    user_id: UUID
    family_id: UUID
    token_hash: bytes
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    replaced_by: UUID | None


def _row(record: asyncpg.Record | None) -> RefreshTokenRow | None:
    return RefreshTokenRow(**dict(record)) if record is not None else None


class RefreshTokenStore:
    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: UUID,
        family_id: UUID,
        token_hash: bytes,
        created_at: datetime,
        expires_at: datetime,
    ) -> RefreshTokenRow:
        record = await conn.fetchrow(INSERT, user_id, family_id, token_hash, created_at, expires_at)
        return RefreshTokenRow(**dict(record))

    async def by_hash_for_update(self, conn: asyncpg.Connection, token_hash: bytes) -> RefreshTokenRow | None:
        return _row(await conn.fetchrow(BY_HASH_FOR_UPDATE, token_hash))

    async def by_id_for_update(self, conn: asyncpg.Connection, token_id: UUID) -> RefreshTokenRow | None:
        return _row(await conn.fetchrow(BY_ID_FOR_UPDATE, token_id))

    async def mark_rotated(self, conn: asyncpg.Connection, token_id: UUID, *, replaced_by: UUID) -> None:
        await conn.execute(MARK_ROTATED, token_id, replaced_by)

    async def revoke_family(self, conn: asyncpg.Connection, family_id: UUID) -> None:
        await conn.execute(REVOKE_FAMILY, family_id)

    async def revoke_user(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        await conn.execute(REVOKE_USER, user_id)

    async def family_revoked(self, conn: asyncpg.Connection, family_id: UUID) -> bool:
        return bool(await conn.fetchval(FAMILY_REVOKED, family_id))

    async def revoked_families_since(self, conn: asyncpg.Connection, seconds: float) -> dict[UUID, datetime]:
        """Families revoked in the last `seconds`, with when: their access tokens may still be unexpired."""
        return {r["family_id"]: r["revoked_at"] for r in await conn.fetch(REVOKED_FAMILIES_SINCE, seconds)}
