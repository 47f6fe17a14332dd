"""UserStore: the `users` table. Methods take the caller's connection (the caller owns the transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import Principal

_COLUMNS = (
    "id, email, password_hash, display_name, role, plan, timezone, firebase_uid,"
    " banned_at, ban_reason, session_version, avatar_file_id, created_at, updated_at"
)

INSERT = f"""
INSERT INTO users (email, password_hash, display_name, role, firebase_uid)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING {_COLUMNS}
"""
BY_ID = f"SELECT {_COLUMNS} FROM users WHERE id = $1"
BY_ID_FOR_UPDATE = f"SELECT {_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
BY_EMAIL = f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1)"
BY_FIREBASE_UID = f"SELECT {_COLUMNS} FROM users WHERE firebase_uid = $1"
# NULL leaves display_name and timezone as they are; the avatar changes only when $4 says so ($5 NULL clears it).
UPDATE_PROFILE = f"""
UPDATE users SET display_name = COALESCE($2, display_name), timezone = COALESCE($3, timezone),
                 avatar_file_id = CASE WHEN $4 THEN $5::uuid ELSE avatar_file_id END, updated_at = now()
WHERE id = $1 RETURNING {_COLUMNS}
"""
SET_PASSWORD = f"""
UPDATE users SET password_hash = $2, session_version = session_version + 1, updated_at = now()
WHERE id = $1 RETURNING {_COLUMNS}
"""
SET_ROLE = f"UPDATE users SET role = $2, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}"
SET_FIREBASE_UID = f"UPDATE users SET firebase_uid = $2, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}"
BUMP_SESSION_VERSION = f"""
UPDATE users SET session_version = session_version + 1, updated_at = now()
WHERE id = $1 RETURNING {_COLUMNS}
"""
SET_BAN = f"""
UPDATE users SET banned_at = CASE WHEN $2 THEN now() END, ban_reason = CASE WHEN $2 THEN $3 END,
                 session_version = session_version + CASE WHEN $2 THEN 1 ELSE 0 END, updated_at = now()
WHERE id = $1 RETURNING {_COLUMNS}
"""
SEARCH = f"""
SELECT {_COLUMNS} FROM users
WHERE ($1::text IS NULL OR email ILIKE '%' || $1 || '%' OR display_name ILIKE '%' || $1 || '%')
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
ORDER BY created_at DESC, id DESC LIMIT $4
"""


@dataclass(frozen=True)
class UserRow:
    id: UUID
    email: str
    password_hash: str | None
    display_name: str
    role: str
    plan: str
    timezone: str
    firebase_uid: str | None
    banned_at: datetime | None
    ban_reason: str | None
    session_version: int
    avatar_file_id: UUID | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_banned(self) -> bool:
        return self.banned_at is not None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def principal(self) -> Principal:
        return Principal(
            id=self.id,
            email=self.email,
            display_name=self.display_name,
            role=self.role,
            plan=self.plan,
            timezone=self.timezone,
            session_version=self.session_version,
            created_at=self.created_at,
            has_password=self.password_hash is not None,
            firebase_linked=self.firebase_uid is not None,
            banned=self.banned_at is not None,
            avatar_file_id=self.avatar_file_id,
        )


def _row(record: asyncpg.Record | None) -> UserRow | None:
    return UserRow(**dict(record)) if record is not None else None


class UserStore:
    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        email: str,
        password_hash: str | None,
        display_name: str,
        role: str,
        firebase_uid: str | None = None,
    ) -> UserRow | None:
        """Returns None when the email (or Firebase uid) is already taken."""
        return _row(await conn.fetchrow(INSERT, email, password_hash, display_name, role, firebase_uid))

    async def get(self, conn: asyncpg.Connection, user_id: UUID, *, for_update: bool = False) -> UserRow | None:
        return _row(await conn.fetchrow(BY_ID_FOR_UPDATE if for_update else BY_ID, user_id))

    async def by_email(self, conn: asyncpg.Connection, email: str) -> UserRow | None:
        return _row(await conn.fetchrow(BY_EMAIL, email))

    async def by_firebase_uid(self, conn: asyncpg.Connection, uid: str) -> UserRow | None:
        return _row(await conn.fetchrow(BY_FIREBASE_UID, uid))

    async def update_profile(
        self,
        conn: asyncpg.Connection,
        user_id: UUID,
        *,
        display_name: str | None,
        timezone: str | None,
        set_avatar: bool = False,
        avatar_file_id: UUID | None = None,
    ) -> UserRow | None:
        """None leaves display_name and timezone as they are; with `set_avatar` the avatar becomes
        `avatar_file_id` (None: no avatar). The caller checks that the file is the user's own image."""
        return _row(await conn.fetchrow(UPDATE_PROFILE, user_id, display_name, timezone, set_avatar, avatar_file_id))

    async def set_password(self, conn: asyncpg.Connection, user_id: UUID, password_hash: str) -> UserRow | None:
        return _row(await conn.fetchrow(SET_PASSWORD, user_id, password_hash))

    async def set_role(self, conn: asyncpg.Connection, user_id: UUID, role: str) -> UserRow | None:
        return _row(await conn.fetchrow(SET_ROLE, user_id, role))

    async def set_firebase_uid(self, conn: asyncpg.Connection, user_id: UUID, uid: str | None) -> UserRow | None:
        return _row(await conn.fetchrow(SET_FIREBASE_UID, user_id, uid))

    async def bump_session_version(self, conn: asyncpg.Connection, user_id: UUID) -> UserRow | None:
        return _row(await conn.fetchrow(BUMP_SESSION_VERSION, user_id))

    async def set_ban(
        self, conn: asyncpg.Connection, user_id: UUID, *, banned: bool, reason: str | None
    ) -> UserRow | None:
        return _row(await conn.fetchrow(SET_BAN, user_id, banned, reason))

    async def search(
        self, conn: asyncpg.Connection, *, query: str | None, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[UserRow]:
        """Newest first, after the keyset `before` (created_at, id) when given."""
        at, last_id = before if before is not None else (None, None)
        return [UserRow(**dict(r)) for r in await conn.fetch(SEARCH, query, at, last_id, limit)]
