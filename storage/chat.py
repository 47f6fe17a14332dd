"""ChatStore: chat sessions and their messages. Every query that touches a session names its owner,
so a wrong owner reads as "not found" at the SQL level."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import ChatSession, Message

_SESSION_COLUMNS = "id, user_id, persona_id, title, pinned, last_seq, created_at, updated_at"
_MESSAGE_COLUMNS = "id, session_id, seq, role, content, status, client_id, reply_to, usage, attachments, created_at"

# The persona must be the caller's own or public; its name is the default title.
INSERT_SESSION = f"""
INSERT INTO chat_sessions (user_id, persona_id, title)
SELECT $1, p.id, COALESCE($3, p.name) FROM personas p
WHERE p.id = $2 AND (p.owner_id = $1 OR p.visibility = 'public')
RETURNING {_SESSION_COLUMNS}
"""
OWNED_SESSION = f"SELECT {_SESSION_COLUMNS} FROM chat_sessions WHERE id = $1 AND user_id = $2"
# Keyset pagination in list order: pinned first, then most recently active.
LIST_SESSIONS = f"""
SELECT {_SESSION_COLUMNS} FROM chat_sessions
WHERE user_id = $1
  AND ($2::boolean IS NULL OR (pinned, updated_at, id) < ($2, $3::timestamptz, $4::uuid))
ORDER BY pinned DESC, updated_at DESC, id DESC
LIMIT $5
"""
UPDATE_SESSION = f"""
UPDATE chat_sessions SET title = COALESCE($3, title), pinned = COALESCE($4, pinned), updated_at = now()
WHERE id = $1 AND user_id = $2 RETURNING {_SESSION_COLUMNS}
"""
DELETE_SESSION = "DELETE FROM chat_sessions WHERE id = $1 AND user_id = $2 RETURNING id"

# The send in one round trip: next seq (row lock) and insert, skipped when the client_id is stored.
INSERT_USER_MESSAGE = f"""
WITH slot AS (
    UPDATE chat_sessions SET last_seq = last_seq + 1, updated_at = now()
    WHERE id = $1 AND user_id = $2
      AND NOT EXISTS (SELECT 1 FROM messages WHERE session_id = $1 AND client_id = $3)
    RETURNING last_seq, persona_id
)
INSERT INTO messages (session_id, seq, role, content, status, client_id, attachments)
SELECT $1, slot.last_seq, 'user', $4, 'complete', $3, $5 FROM slot
RETURNING {_MESSAGE_COLUMNS}, (SELECT persona_id FROM slot) AS persona_id
"""
# Group commit of plain sends (services/message_writer.py), one statement per batch ($1..$4: the
# batch's session, user, client_id and content, in arrival order). The sessions' rows are locked in id
# order (two batches, or a batch and a single send, never deadlock) and read after the lock, so
# last_seq is current. A message is stored when its session is the user's and has no persona and its
# client_id is not stored yet (the first of the batch wins); seqs follow arrival order. A client_id
# committed by another process while this one waited for a lock slips past NOT EXISTS (the snapshot
# predates the lock) and hits the unique index: the whole statement fails and the writer falls back.
# Rows come back for the stored messages (only the columns the database chose: the rest is what was
# sent) and, flagged `persona`, for messages to persona sessions.
GROUP_SEND = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) WITH ORDINALITY
        AS r(session_id, user_id, client_id, content, ord)
),
locked AS MATERIALIZED (
    SELECT id, user_id, persona_id, last_seq FROM chat_sessions
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
),
fresh AS MATERIALIZED (
    SELECT i.session_id, i.client_id, i.content,
           l.last_seq + row_number() OVER (PARTITION BY i.session_id ORDER BY i.ord) AS seq
    FROM (SELECT DISTINCT ON (session_id, client_id) * FROM input ORDER BY session_id, client_id, ord) i
    JOIN locked l ON l.id = i.session_id AND l.user_id = i.user_id AND l.persona_id IS NULL
    WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.session_id = i.session_id AND m.client_id = i.client_id)
),
bumped AS (
    UPDATE chat_sessions s SET last_seq = f.last_seq, updated_at = now()
    FROM (SELECT session_id, max(seq) AS last_seq FROM fresh GROUP BY session_id) f
    WHERE s.id = f.session_id
),
inserted AS (
    INSERT INTO messages (session_id, seq, role, content, status, client_id, attachments)
    SELECT session_id, seq, 'user', content, 'complete', client_id, '[]'::jsonb FROM fresh
    RETURNING id, session_id, seq, client_id, created_at
)
SELECT false AS persona, id, session_id, seq, client_id, created_at FROM inserted
UNION ALL
SELECT DISTINCT true, NULL::uuid, i.session_id, NULL::bigint, i.client_id, NULL::timestamptz
FROM input i JOIN locked l ON l.id = i.session_id AND l.user_id = i.user_id AND l.persona_id IS NOT NULL
"""
MESSAGE_BY_CLIENT_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND client_id = $2"
INSERT_MESSAGE = f"""
INSERT INTO messages (session_id, seq, role, content, status, client_id, reply_to, usage, attachments)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {_MESSAGE_COLUMNS}
"""
MESSAGES_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
MESSAGES_BEFORE = f"""
SELECT * FROM (
    SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3
) newest ORDER BY seq
"""
# --- AI replies ---
SESSION_SEQ = """
UPDATE chat_sessions SET last_seq = last_seq + 1, updated_at = now()
WHERE id = $1 RETURNING last_seq, persona_id, user_id
"""
# The session's streaming reply, if any, and whether its owner's lease ran out (the owner died).
STREAMING_REPLY = """
SELECT id, lease_until < now() AS expired FROM messages WHERE session_id = $1 AND status = 'streaming'
"""
# The owner renews the leases of every reply it runs in one statement; a row missing from the answer
# was ended by another process (its lease had run out).
RENEW_LEASES = """
UPDATE messages SET lease_until = now() + make_interval(secs => $2)
WHERE id = ANY($1::uuid[]) AND status = 'streaming' RETURNING id
"""
EXPIRED_REPLIES = """
SELECT id FROM messages WHERE status = 'streaming' AND lease_until < now() ORDER BY lease_until LIMIT $1
"""
# Ending an orphan: only one process wins (the row must still be streaming with its lease run out).
END_ORPHAN = f"""
UPDATE messages SET content = $2, status = $3
WHERE id = $1 AND status = 'streaming' AND lease_until < now() RETURNING {_MESSAGE_COLUMNS}
"""
# A reply of the user's that can be watched live: streaming with its lease held, and who owns it.
REPLY_OWNER = """
SELECT m.session_id, m.status, m.lease_until < now() AS expired, s.user_id
FROM messages m JOIN chat_sessions s ON s.id = m.session_id
WHERE m.id = $1 AND m.role = 'assistant'
"""
LIVE_REPLIES = """
SELECT id FROM messages WHERE session_id = $1 AND status = 'streaming' AND lease_until >= now()
"""
# User messages after the last reply that answered (a failed reply answered nothing).
UNANSWERED = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND role = 'user' AND seq > COALESCE(
    (SELECT max(seq) FROM messages
     WHERE session_id = $1 AND role = 'assistant' AND status IN ('complete', 'stopped')), 0)
ORDER BY seq
"""
FINISH_REPLY = f"""
UPDATE messages SET content = $2, status = $3, usage = $4
WHERE id = $1 AND status = 'streaming' RETURNING {_MESSAGE_COLUMNS}
"""
MESSAGE_BY_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1"
FIRST_REPLY_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND role = 'assistant' AND seq > $2 ORDER BY seq LIMIT 1
"""


@dataclass(frozen=True)
class NewUserMessage:
    session_id: UUID
    user_id: UUID
    client_id: UUID
    content: str


@dataclass(frozen=True)
class ReplyLease:
    """An assistant message as a stream: whose it is, and whether it still streams under a live lease."""

    session_id: UUID
    user_id: UUID
    status: str
    expired: bool | None  # whether its lease ran out (also after the reply ended); None: never had one

    @property
    def live(self) -> bool:
        return self.status == "streaming" and self.expired is False


def _session(record: asyncpg.Record | None) -> ChatSession | None:
    return ChatSession(**dict(record)) if record is not None else None


def _message(record: asyncpg.Record | None) -> Message | None:
    return Message(**dict(record)) if record is not None else None


class ChatStore:
    async def create_session(
        self, conn: asyncpg.Connection, *, user_id: UUID, persona_id: UUID, title: str | None
    ) -> ChatSession | None:
        """None when the persona does not exist or is someone else's private persona."""
        return _session(await conn.fetchrow(INSERT_SESSION, user_id, persona_id, title))

    async def owned_session(self, conn: asyncpg.Connection, *, session_id: UUID, user_id: UUID) -> ChatSession | None:
        return _session(await conn.fetchrow(OWNED_SESSION, session_id, user_id))

    async def list_sessions(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: UUID,
        after: tuple[bool, datetime, UUID] | None,
        limit: int,
    ) -> list[ChatSession]:
        pinned, updated, last_id = after if after else (None, None, None)
        rows = await conn.fetch(LIST_SESSIONS, user_id, pinned, updated, last_id, limit)
        return [ChatSession(**dict(r)) for r in rows]

    async def update_session(
        self, conn: asyncpg.Connection, *, session_id: UUID, user_id: UUID, title: str | None, pinned: bool | None
    ) -> ChatSession | None:
        return _session(await conn.fetchrow(UPDATE_SESSION, session_id, user_id, title, pinned))

    async def delete_session(self, conn: asyncpg.Connection, *, session_id: UUID, user_id: UUID) -> bool:
        return await conn.fetchval(DELETE_SESSION, session_id, user_id) is not None

    async def insert_user_message(
        self,
        conn: asyncpg.Connection,
        *,
        session_id: UUID,
        user_id: UUID,
        client_id: UUID,
        content: str,
        attachments: list[Any] | None,
    ) -> tuple[Message, UUID | None] | None:
        """(message, the session's persona) or None when the client_id is stored or the session is not
        the user's. A concurrent duplicate raises UniqueViolationError (the caller rolls back)."""
        record = await conn.fetchrow(INSERT_USER_MESSAGE, session_id, user_id, client_id, content, attachments or [])
        if record is None:
            return None
        fields = dict(record)
        persona_id = fields.pop("persona_id")
        return Message(**fields), persona_id

    async def group_send(
        self, conn: asyncpg.Connection, rows: list[NewUserMessage]
    ) -> tuple[list[Message], set[tuple[UUID, UUID]]]:
        """Store a batch of plain user messages (GROUP_SEND): the stored messages, and the (session_id,
        client_id) pairs that went to a persona session instead (not stored)."""
        records = await conn.fetch(
            GROUP_SEND,
            [r.session_id for r in rows],
            [r.user_id for r in rows],
            [r.client_id for r in rows],
            [r.content for r in rows],
        )
        content: dict[tuple[UUID, UUID], str] = {}
        for r in rows:
            content.setdefault((r.session_id, r.client_id), r.content)  # the first of a batch is stored
        stored: list[Message] = []
        persona: set[tuple[UUID, UUID]] = set()
        for record in records:
            key = (record["session_id"], record["client_id"])
            if record["persona"]:
                persona.add(key)
                continue
            stored.append(
                Message(
                    id=record["id"],
                    session_id=key[0],
                    seq=record["seq"],
                    role="user",
                    content=content[key],
                    status="complete",
                    client_id=key[1],
                    reply_to=None,
                    usage=None,
                    attachments=[],
                    created_at=record["created_at"],
                )
            )
        return stored, persona

    async def message_by_client_id(
        self, conn: asyncpg.Connection, *, session_id: UUID, client_id: UUID
    ) -> Message | None:
        return _message(await conn.fetchrow(MESSAGE_BY_CLIENT_ID, session_id, client_id))

    async def insert_message(
        self,
        conn: asyncpg.Connection,
        *,
        session_id: UUID,
        seq: int,
        role: str,
        content: str,
        status: str = "complete",
        client_id: UUID | None = None,
        reply_to: UUID | None = None,
        usage: dict[str, Any] | None = None,
        attachments: list[Any] | None = None,
    ) -> Message:
        record = await conn.fetchrow(
            INSERT_MESSAGE, session_id, seq, role, content, status, client_id, reply_to, usage, attachments or []
        )
        return Message(**dict(record))

    async def messages_after(
        self, conn: asyncpg.Connection, *, session_id: UUID, after_seq: int, limit: int
    ) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(MESSAGES_AFTER, session_id, after_seq, limit)]

    async def messages_before(
        self, conn: asyncpg.Connection, *, session_id: UUID, before_seq: int, limit: int
    ) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(MESSAGES_BEFORE, session_id, before_seq, limit)]

    # --- AI replies ---

    async def lock_next_seq(self, conn: asyncpg.Connection, session_id: UUID) -> tuple[int, UUID | None, UUID] | None:
        """Next seq of the session (locking its row until commit), its persona and its owner."""
        record = await conn.fetchrow(SESSION_SEQ, session_id)
        return (record["last_seq"], record["persona_id"], record["user_id"]) if record else None

    async def streaming_reply(self, conn: asyncpg.Connection, session_id: UUID) -> tuple[UUID, bool] | None:
        """The session's streaming reply and whether its lease has expired, or None."""
        row = await conn.fetchrow(STREAMING_REPLY, session_id)
        return (row["id"], bool(row["expired"])) if row else None

    async def claim_lease(self, conn: asyncpg.Connection, message_id: UUID, *, seconds: float) -> None:
        await conn.execute(RENEW_LEASES, [message_id], seconds)

    async def renew_leases(self, conn: asyncpg.Connection, message_ids: list[UUID], *, seconds: float) -> set[UUID]:
        """Extends the leases; returns the ids still streaming (the others were ended elsewhere)."""
        return {r["id"] for r in await conn.fetch(RENEW_LEASES, message_ids, seconds)}

    async def expired_replies(self, conn: asyncpg.Connection, *, limit: int) -> list[UUID]:
        return [r["id"] for r in await conn.fetch(EXPIRED_REPLIES, limit)]

    async def end_orphan(
        self, conn: asyncpg.Connection, message_id: UUID, *, content: str, status: str
    ) -> Message | None:
        return _message(await conn.fetchrow(END_ORPHAN, message_id, content, status))

    async def reply_owner(self, conn: asyncpg.Connection, message_id: UUID) -> ReplyLease | None:
        row = await conn.fetchrow(REPLY_OWNER, message_id)
        return ReplyLease(**dict(row)) if row else None

    async def live_replies(self, conn: asyncpg.Connection, session_id: UUID) -> set[UUID]:
        return {r["id"] for r in await conn.fetch(LIVE_REPLIES, session_id)}

    async def unanswered(self, conn: asyncpg.Connection, session_id: UUID) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(UNANSWERED, session_id)]

    async def recent(self, conn: asyncpg.Connection, session_id: UUID, *, before_seq: int, limit: int) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(MESSAGES_BEFORE, session_id, before_seq, limit)]

    async def finish_reply(
        self, conn: asyncpg.Connection, message_id: UUID, *, content: str, status: str, usage: dict[str, Any] | None
    ) -> Message | None:
        return _message(await conn.fetchrow(FINISH_REPLY, message_id, content, status, usage))

    async def message(self, conn: asyncpg.Connection, message_id: UUID) -> Message | None:
        return _message(await conn.fetchrow(MESSAGE_BY_ID, message_id))

    async def first_reply_after(self, conn: asyncpg.Connection, session_id: UUID, seq: int) -> Message | None:
        return _message(await conn.fetchrow(FIRST_REPLY_AFTER, session_id, seq))
