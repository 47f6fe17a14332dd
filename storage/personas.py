"""PersonaStore: the `personas` and `persona_activity` tables. Methods take the caller's connection (the
caller owns the transaction)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import Persona, PersonaDraft, ScoredPersona

_COLUMNS = (
    "id, owner_id, name, description, personality, greeting, alternate_greetings, tags, visibility, remixable,"
    " avatar_file_id, cloned_from, created_at, updated_at"
)
_P_COLUMNS = ", ".join(f"p.{c.strip()}" for c in _COLUMNS.split(","))

INSERT = f"""
INSERT INTO personas (owner_id, name, description, personality, greeting, tags, visibility, remixable,
                      avatar_file_id, cloned_from, alternate_greetings)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING {_COLUMNS}
"""
BY_ID = f"SELECT {_COLUMNS} FROM personas WHERE id = $1"
COUNT_OWNED = "SELECT count(*) FROM personas WHERE owner_id = $1"
# Keyset pagination on (created_at, id), newest first; served by personas_owner_idx.
LIST_OWNED = f"""
SELECT {_COLUMNS} FROM personas
WHERE owner_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC LIMIT $4
"""
# NULL leaves a column as it is (those columns are NOT NULL, so NULL never means "clear"; an empty array is
# not NULL, so [] clears the alternate greetings). The avatar, which may be cleared, changes only when $10
# says so: to $11, NULL for none.
UPDATE = f"""
UPDATE personas SET name = COALESCE($3, name), description = COALESCE($4, description),
                    personality = COALESCE($5, personality), greeting = COALESCE($6, greeting),
                    tags = COALESCE($7::text[], tags), visibility = COALESCE($8, visibility),
                    remixable = COALESCE($9, remixable),
                    alternate_greetings = COALESCE($12::text[], alternate_greetings),
                    avatar_file_id = CASE WHEN $10 THEN $11::uuid ELSE avatar_file_id END, updated_at = now()
WHERE id = $1 AND owner_id = $2
RETURNING {_COLUMNS}
"""
DELETE = "DELETE FROM personas WHERE id = $1 AND owner_id = $2 RETURNING id"
# Public personas and the viewer's own, ranked by the weighted vector (name A, tags and description B,
# personality C): `search` for the viewer's own, `shared_search` (personality only when remixable) for
# others', so nobody finds a persona by words of a definition they may not read. Each side of the OR has
# its GIN index. A query of stop words only matches nothing.
SEARCH = f"""
SELECT {_P_COLUMNS}, ts_rank(CASE WHEN p.owner_id = $1 THEN p.search ELSE p.shared_search END, q) AS score
FROM personas p, websearch_to_tsquery('english', $2) q
WHERE (p.owner_id = $1 AND p.search @@ q)
   OR (p.visibility = 'public' AND p.owner_id <> $1 AND p.shared_search @@ q)
ORDER BY score DESC, p.created_at DESC, p.id DESC
LIMIT $3 OFFSET $4
"""
# Time-decayed activity: Σ (chats*3 + messages) * 0.5^(age_days/2) over the last 14 days (today is
# age 0). Personas with recent activity first, by score; then quiet public personas, newest first,
# with score 0 (read from personas_public_idx, so the quiet tail never sorts the whole table).
TRENDING = f"""
WITH scores AS (
    SELECT persona_id, sum((chats * 3 + messages) * power(0.5::float8, (current_date - day)::float8 / 2)) AS score
    FROM persona_activity
    WHERE day > current_date - 14 AND day <= current_date
    GROUP BY persona_id
    HAVING sum(chats * 3 + messages) > 0
),
active AS (
    SELECT {_P_COLUMNS}, s.score
    FROM scores s JOIN personas p ON p.id = s.persona_id
    WHERE p.visibility = 'public'
    ORDER BY s.score DESC, p.created_at DESC, p.id DESC
    LIMIT $1::bigint + $2::bigint
),
quiet AS (
    SELECT {_P_COLUMNS}, 0::float8 AS score
    FROM personas p
    WHERE p.visibility = 'public' AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.persona_id = p.id)
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT $1::bigint + $2::bigint
)
SELECT * FROM (SELECT * FROM active UNION ALL SELECT * FROM quiet) ranked
ORDER BY score DESC, created_at DESC, id DESC
LIMIT $1 OFFSET $2
"""
# Adds to today's row. Skipped when the persona is gone, so a chat outliving its persona is harmless.
RECORD_ACTIVITY = """
INSERT INTO persona_activity (persona_id, day, chats, messages)
SELECT $1, current_date, $2, $3 WHERE EXISTS (SELECT 1 FROM personas WHERE id = $1)
ON CONFLICT (persona_id, day) DO UPDATE
SET chats = persona_activity.chats + EXCLUDED.chats, messages = persona_activity.messages + EXCLUDED.messages
"""


def _row(record: asyncpg.Record | None) -> Persona | None:
    return Persona(**dict(record)) if record is not None else None


def _scored(record: asyncpg.Record) -> ScoredPersona:
    fields = dict(record)
    score = float(fields.pop("score"))
    return ScoredPersona(Persona(**fields), score)


class PersonaStore:
    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        owner_id: UUID,
        draft: PersonaDraft,
        avatar_file_id: UUID | None = None,
        cloned_from: UUID | None = None,
    ) -> Persona:
        record = await conn.fetchrow(
            INSERT,
            owner_id,
            draft.name,
            draft.description,
            draft.personality,
            draft.greeting,
            list(draft.tags),
            draft.visibility,
            draft.remixable,
            avatar_file_id,
            cloned_from,
            list(draft.alternate_greetings),
        )
        row = _row(record)
        assert row is not None
        return row

    async def get(self, conn: asyncpg.Connection, persona_id: UUID) -> Persona | None:
        return _row(await conn.fetchrow(BY_ID, persona_id))

    async def count_owned(self, conn: asyncpg.Connection, owner_id: UUID) -> int:
        return int(await conn.fetchval(COUNT_OWNED, owner_id))

    async def list_owned(
        self, conn: asyncpg.Connection, owner_id: UUID, *, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[Persona]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
        created_at, persona_id = before if before is not None else (None, None)
        return [Persona(**dict(r)) for r in await conn.fetch(LIST_OWNED, owner_id, created_at, persona_id, limit)]

    async def update(
        self,
        conn: asyncpg.Connection,
        persona_id: UUID,
        *,
        owner_id: UUID,
        name: str | None = None,
        description: str | None = None,
        personality: str | None = None,
        greeting: str | None = None,
        alternate_greetings: list[str] | None = None,
        tags: list[str] | None = None,
        visibility: str | None = None,
        remixable: bool | None = None,
        set_avatar: bool = False,
        avatar_file_id: UUID | None = None,
    ) -> Persona | None:
        """None (leave as is) for a field not given; with `set_avatar` the avatar becomes `avatar_file_id`
        (None: no avatar). Returns None unless `owner_id` owns the persona."""
        return _row(
            await conn.fetchrow(
                UPDATE,
                persona_id,
                owner_id,
                name,
                description,
                personality,
                greeting,
                tags,
                visibility,
                remixable,
                set_avatar,
                avatar_file_id,
                alternate_greetings,
            )
        )

    async def delete(self, conn: asyncpg.Connection, persona_id: UUID, *, owner_id: UUID) -> bool:
        return await conn.fetchval(DELETE, persona_id, owner_id) is not None

    async def search(
        self, conn: asyncpg.Connection, *, viewer_id: UUID, query: str, offset: int, limit: int
    ) -> list[ScoredPersona]:
        return [_scored(r) for r in await conn.fetch(SEARCH, viewer_id, query, limit, offset)]

    async def trending(self, conn: asyncpg.Connection, *, offset: int, limit: int) -> list[ScoredPersona]:
        return [_scored(r) for r in await conn.fetch(TRENDING, limit, offset)]

    async def record_activity(
        self, conn: asyncpg.Connection, persona_id: UUID, *, chats: int = 0, messages: int = 0
    ) -> None:
        """Adds to the persona's activity for today (trending reads these rows)."""
        await conn.execute(RECORD_ACTIVITY, persona_id, chats, messages)
