"""KnowledgeStore: the `knowledge_entries` and `knowledge_chunks` tables (a persona's knowledge base).
Methods take the caller's connection (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import KnowledgeDocument, KnowledgeEntry

_COLUMNS = "id, persona_id, title, source, filename, content_type, keys, chars, chunks, created_at"

# Knowledge is the persona owner's alone: every read and change first checks the owner here. FOR KEY
# SHARE holds off a concurrent delete of the persona until the caller's transaction ends, so rows added
# meanwhile never meet a vanished persona (they go with it, by cascade, once the delete proceeds).
OWNS_PERSONA = "SELECT EXISTS (SELECT 1 FROM personas WHERE id = $1 AND owner_id = $2)"
LOCK_OWNED_PERSONA = "SELECT id FROM personas WHERE id = $1 AND owner_id = $2 FOR KEY SHARE"
INSERT_ENTRY = f"""
INSERT INTO knowledge_entries (persona_id, title, source, filename, content_type, content, keys, chars, chunks)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {_COLUMNS}
"""
INSERT_CHUNKS = """
INSERT INTO knowledge_chunks (entry_id, persona_id, position, content)
SELECT $1, $2, t.ord - 1, t.content FROM unnest($3::text[]) WITH ORDINALITY AS t(content, ord)
"""
# Keyset pagination on (created_at, id), newest first; served by knowledge_entries_persona_idx.
LIST_ENTRIES = f"""
SELECT {_COLUMNS} FROM knowledge_entries
WHERE persona_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC LIMIT $4
"""
ENTRY = f"SELECT {_COLUMNS}, content FROM knowledge_entries WHERE id = $1 AND persona_id = $2"
# Oldest first: the order they were added, which export keeps.
DOCUMENTS = f"SELECT {_COLUMNS}, content FROM knowledge_entries WHERE persona_id = $1 ORDER BY created_at, id"
DELETE_ENTRY = "DELETE FROM knowledge_entries WHERE id = $1 AND persona_id = $2 RETURNING id"
COUNT_ENTRIES = "SELECT count(*) FROM knowledge_entries WHERE persona_id = $1"
# New ids for the copies are made first, so the chunks can follow their entry in the same statement
# (foreign keys are checked at the end of the statement, when both inserts are done). created_at is kept:
# the copy lists in the same order as the source.
COPY = """
WITH mapping AS (
    SELECT id AS old_id, gen_random_uuid() AS new_id FROM knowledge_entries WHERE persona_id = $1
),
entries AS (
    INSERT INTO knowledge_entries (id, persona_id, title, source, filename, content_type, content, keys, chars,
                                   chunks, created_at)
    SELECT m.new_id, $2, e.title, e.source, e.filename, e.content_type, e.content, e.keys, e.chars, e.chunks,
           e.created_at
    FROM knowledge_entries e JOIN mapping m ON m.old_id = e.id
    RETURNING id
),
chunks AS (
    INSERT INTO knowledge_chunks (entry_id, persona_id, position, content)
    SELECT m.new_id, $2, c.position, c.content
    FROM knowledge_chunks c JOIN mapping m ON m.old_id = c.entry_id
)
SELECT count(*) FROM entries
"""
# Any word of the message may match: each word becomes its own plainto_tsquery (stemmed; a stop word
# gives an empty query, dropped) and they are OR-ed. No word left: NULL, which matches nothing.
# ts_rank_cd rewards chunks where the matched words are many and close together.
RELEVANT = """
WITH query AS (
    SELECT parlor_tsquery_or(q) AS q
    FROM (SELECT plainto_tsquery('english', w) AS q FROM unnest($2::text[]) AS w) words
    WHERE numnode(q) > 0
)
SELECT c.content, ts_rank_cd(c.search, query.q) AS rank
FROM knowledge_chunks c, query
WHERE c.persona_id = $1 AND c.search @@ query.q
ORDER BY rank DESC, c.entry_id, c.position
LIMIT $3
"""


@dataclass(frozen=True)
class ChunkMatch:
    content: str
    rank: float


def _entry(record: asyncpg.Record | None) -> KnowledgeEntry | None:
    return KnowledgeEntry(**dict(record)) if record is not None else None


def _document(record: asyncpg.Record) -> KnowledgeDocument:
    fields = dict(record)
    content = fields.pop("content")
    return KnowledgeDocument(KnowledgeEntry(**fields), content)


class KnowledgeStore:
    async def owns_persona(self, conn: asyncpg.Connection, persona_id: UUID, *, owner_id: UUID) -> bool:
        return bool(await conn.fetchval(OWNS_PERSONA, persona_id, owner_id))

    async def lock_owned_persona(self, conn: asyncpg.Connection, persona_id: UUID, *, owner_id: UUID) -> bool:
        """Inside the caller's transaction: True if `owner_id` owns the persona, which then cannot be
        deleted until the transaction ends."""
        return await conn.fetchval(LOCK_OWNED_PERSONA, persona_id, owner_id) is not None

    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        persona_id: UUID,
        title: str,
        source: str,
        content: str,
        chunks: Sequence[str],
        filename: str | None = None,
        content_type: str | None = None,
        keys: Sequence[str] = (),
    ) -> KnowledgeEntry:
        """The entry and its chunks; call inside a transaction so they are stored together."""
        record = await conn.fetchrow(
            INSERT_ENTRY,
            persona_id,
            title,
            source,
            filename,
            content_type,
            content,
            list(keys),
            len(content),
            len(chunks),
        )
        entry = _entry(record)
        assert entry is not None
        await conn.execute(INSERT_CHUNKS, entry.id, persona_id, list(chunks))
        return entry

    async def list_entries(
        self, conn: asyncpg.Connection, persona_id: UUID, *, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[KnowledgeEntry]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
        created_at, entry_id = before if before is not None else (None, None)
        records = await conn.fetch(LIST_ENTRIES, persona_id, created_at, entry_id, limit)
        return [KnowledgeEntry(**dict(r)) for r in records]

    async def get(self, conn: asyncpg.Connection, entry_id: UUID, *, persona_id: UUID) -> KnowledgeDocument | None:
        record = await conn.fetchrow(ENTRY, entry_id, persona_id)
        return _document(record) if record is not None else None

    async def documents(self, conn: asyncpg.Connection, persona_id: UUID) -> list[KnowledgeDocument]:
        """Every entry of the persona with its text, oldest first."""
        return [_document(r) for r in await conn.fetch(DOCUMENTS, persona_id)]

    async def delete(self, conn: asyncpg.Connection, entry_id: UUID, *, persona_id: UUID) -> bool:
        return await conn.fetchval(DELETE_ENTRY, entry_id, persona_id) is not None

    async def count(self, conn: asyncpg.Connection, persona_id: UUID) -> int:
        return int(await conn.fetchval(COUNT_ENTRIES, persona_id))

    async def copy(self, conn: asyncpg.Connection, *, source_persona_id: UUID, target_persona_id: UUID) -> int:
        """Copies every entry of one persona, with its chunks, to another; returns how many entries."""
        return int(await conn.fetchval(COPY, source_persona_id, target_persona_id))

    async def relevant(
        self, conn: asyncpg.Connection, persona_id: UUID, *, words: Sequence[str], limit: int
    ) -> list[ChunkMatch]:
        """The persona's chunks matching any of `words`, best ranked first."""
        records = await conn.fetch(RELEVANT, persona_id, list(words), limit)
        return [ChunkMatch(r["content"], float(r["rank"])) for r in records]
