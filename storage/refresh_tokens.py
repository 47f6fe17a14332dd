"""RefreshTokenStore: hashed refresh tokens grouped in rotation families."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

_COLUMNS = "id, user_id, family_id, created_at, expires_at, revoked_at, replaced_by"

INSERT = f"""
INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at)
VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}
"""
BY_HASH_FOR_UPDATE = f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE"
MARK_ROTATED = "UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE id = $1"
REVOKE_FAMILY = "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL"
REVOKE_USER = "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"


@dataclass(frozen=True)
class RefreshTokenRow:
    id: UUID
    user_id: UUID
    family_id: UUID
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    replaced_by: UUID | None


class RefreshTokenStore:
    async def insert(
        self, conn: asyncpg.Connection, *, user_id: UUID, family_id: UUID, token_hash: bytes, expires_at: datetime
    ) -> RefreshTokenRow:
        record = await conn.fetchrow(INSERT, user_id, family_id, token_hash, expires_at)
        return RefreshTokenRow(**dict(record))

    async def by_hash_for_update(self, conn: asyncpg.Connection, token_hash: bytes) -> RefreshTokenRow | None:
        record = await conn.fetchrow(BY_HASH_FOR_UPDATE, token_hash)
        return RefreshTokenRow(**dict(record)) if record else None

    async def mark_rotated(self, conn: asyncpg.Connection, token_id: UUID, *, replaced_by: UUID) -> None:
        await conn.execute(MARK_ROTATED, token_id, replaced_by)

    async def revoke_family(self, conn: asyncpg.Connection, family_id: UUID) -> None:
        await conn.execute(REVOKE_FAMILY, family_id)

    async def revoke_user(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        await conn.execute(REVOKE_USER, user_id)
