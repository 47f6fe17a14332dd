"""ChatStore: chat sessions and their messages. Every query that touches a session names its owner,
so a wrong owner reads as "not found" at the SQL level."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import ChatSession, Message

_SESSION_COLUMNS = "id, user_id, persona_id, title, pinned, last_seq, last_rev, created_at, updated_at"
_MESSAGE_COLUMNS = (
    "id, session_id, seq, role, content, status, client_id, reply_to, usage, attachments, created_at,"
    " rev, kind, variant, variants, edited_at"
)

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
    UPDATE chat_sessions SET last_seq = last_seq + 1, last_rev = last_rev + 1, updated_at = now()
    WHERE id = $1 AND user_id = $2
      AND NOT EXISTS (SELECT 1 FROM messages WHERE session_id = $1 AND client_id = $3)
    RETURNING last_seq, last_rev, persona_id
)
INSERT INTO messages (session_id, seq, rev, role, content, status, client_id, attachments)
SELECT $1, slot.last_seq, slot.last_rev, 'user', $4, 'complete', $3, $5 FROM slot
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
    SELECT id, user_id, persona_id, last_seq, last_rev FROM chat_sessions
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
),
fresh AS MATERIALIZED (
    SELECT i.session_id, i.client_id, i.content,
           l.last_seq + row_number() OVER (PARTITION BY i.session_id ORDER BY i.ord) AS seq,
           l.last_rev + row_number() OVER (PARTITION BY i.session_id ORDER BY i.ord) AS rev
    FROM (SELECT DISTINCT ON (session_id, client_id) * FROM input ORDER BY session_id, client_id, ord) i
    JOIN locked l ON l.id = i.session_id AND l.user_id = i.user_id AND l.persona_id IS NULL
    WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.session_id = i.session_id AND m.client_id = i.client_id)
),
bumped AS (
    UPDATE chat_sessions s SET last_seq = f.last_seq, last_rev = f.last_rev, updated_at = now()
    FROM (SELECT session_id, max(seq) AS last_seq, max(rev) AS last_rev FROM fresh GROUP BY session_id) f
    WHERE s.id = f.session_id
),
inserted AS (
    INSERT INTO messages (session_id, seq, rev, role, content, status, client_id, attachments)
    SELECT session_id, seq, rev, 'user', content, 'complete', client_id, '[]'::jsonb FROM fresh
    RETURNING id, session_id, seq, rev, client_id, created_at
)
SELECT false AS persona, id, session_id, seq, rev, client_id, created_at FROM inserted
UNION ALL
SELECT DISTINCT true, NULL::uuid, i.session_id, NULL::bigint, NULL::bigint, i.client_id, NULL::timestamptz
FROM input i JOIN locked l ON l.id = i.session_id AND l.user_id = i.user_id AND l.persona_id IS NOT NULL
"""
MESSAGE_BY_CLIENT_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND client_id = $2"
# After SESSION_SEQ (same transaction, the session's row locked): the rev it raised.
INSERT_MESSAGE = f"""
INSERT INTO messages (session_id, seq, rev, role, content, status, client_id, reply_to, usage, attachments, kind,
                      variants)
VALUES ($1, $2, (SELECT last_rev FROM chat_sessions WHERE id = $1), $3, $4, $5, $6, $7, $8, $9, $10, $11)
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
UPDATE chat_sessions SET last_seq = last_seq + 1, last_rev = last_rev + 1, updated_at = now()
WHERE id = $1 RETURNING last_seq, persona_id, user_id
"""
# A change to a message raises its session's rev in the same statement (no second round trip).
_NEXT_REV = """next_rev AS (
    UPDATE chat_sessions SET last_rev = last_rev + 1
    WHERE id = (SELECT session_id FROM messages WHERE id = $1) RETURNING last_rev
)"""
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
# A reply with stored variants (a regeneration) writes its selected variant's entry too.
_VARIANT_DONE = """variants = CASE WHEN jsonb_array_length(variants) > variant
        THEN jsonb_set(variants, ARRAY[variant::text], (variants -> variant) || jsonb_build_object(
            'content', {content}::text, 'status', {status}::text, 'usage', {usage}::jsonb))
        ELSE variants END"""
# Ending an orphan: only one process wins (the row must still be streaming with its lease run out).
END_ORPHAN = f"""
WITH {_NEXT_REV}
UPDATE messages SET content = $2, status = $3, rev = (SELECT last_rev FROM next_rev),
    {_VARIANT_DONE.format(content="$2", status="$3", usage="NULL")}
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
WHERE session_id = $1 AND role = 'user' AND status <> 'deleted' AND seq > COALESCE(
    (SELECT max(seq) FROM messages
     WHERE session_id = $1 AND role = 'assistant' AND status IN ('complete', 'stopped')), 0)
ORDER BY seq
"""
FINISH_REPLY = f"""
WITH {_NEXT_REV}
UPDATE messages SET content = $2, status = $3, usage = $4, rev = (SELECT last_rev FROM next_rev),
    {_VARIANT_DONE.format(content="$2", status="$3", usage="$4")}
WHERE id = $1 AND status = 'streaming' RETURNING {_MESSAGE_COLUMNS}
"""
# A new variant of a reply starts streaming: every variant so far ($2, the new one last) kept, it selected.
START_VARIANT = f"""
WITH {_NEXT_REV}
UPDATE messages SET variants = $2::jsonb, variant = $3, content = '', status = 'streaming', usage = NULL,
    rev = (SELECT last_rev FROM next_rev)
WHERE id = $1 AND status <> 'streaming' RETURNING {_MESSAGE_COLUMNS}
"""
# A reply goes on where it stopped: streaming again, its text so far kept (the new text is appended at the end).
START_CONTINUE = f"""
WITH {_NEXT_REV}
UPDATE messages SET status = 'streaming', rev = (SELECT last_rev FROM next_rev)
WHERE id = $1 AND status <> 'streaming' RETURNING {_MESSAGE_COLUMNS}
"""
NEWEST_MESSAGE = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND status <> 'deleted' AND ($2::text IS NULL OR role = $2) ORDER BY seq DESC LIMIT 1
"""
# The user messages a reply answered: those after the reply before it that answered (the greeting counts).
ANSWERED_BY = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND role = 'user' AND status <> 'deleted' AND seq < $2 AND seq > COALESCE(
    (SELECT max(seq) FROM messages
     WHERE session_id = $1 AND role = 'assistant' AND seq < $2 AND status IN ('complete', 'stopped')), 0)
ORDER BY seq
"""
MESSAGE_BY_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1"
FIRST_REPLY_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND role = 'assistant' AND seq > $2 ORDER BY seq LIMIT 1
"""


# --- conversation controls ---
# The message, if its session is the user's, with that session's row locked: changes to one session's
# messages take their revs in commit order.
OWNED_MESSAGE = f"""
WITH s AS (
    SELECT c.id FROM chat_sessions c JOIN messages m ON m.session_id = c.id
    WHERE m.id = $1 AND c.user_id = $2 FOR UPDATE OF c
)
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND session_id = (SELECT id FROM s)
"""
LOCK_SESSION = f"SELECT {_SESSION_COLUMNS} FROM chat_sessions WHERE id = $1 AND user_id = $2 FOR UPDATE"
# The selected variant's text changes with the message's.
EDIT_MESSAGE = f"""
WITH {_NEXT_REV}
UPDATE messages SET content = $2, edited_at = now(), rev = (SELECT last_rev FROM next_rev),
    variants = CASE WHEN jsonb_array_length(variants) > variant
        THEN jsonb_set(variants, ARRAY[variant::text, 'content'], to_jsonb($2::text)) ELSE variants END
WHERE id = $1 RETURNING {_MESSAGE_COLUMNS}
"""
# The selected variant's text, status and usage become the message's (JSON null usage is SQL NULL).
SELECT_VARIANT = f"""
WITH {_NEXT_REV}
UPDATE messages SET variant = $2, content = variants -> $2 ->> 'content', status = variants -> $2 ->> 'status',
    usage = NULLIF(variants -> $2 -> 'usage', 'null'::jsonb), rev = (SELECT last_rev FROM next_rev)
WHERE id = $1 AND jsonb_array_length(variants) > $2 RETURNING {_MESSAGE_COLUMNS}
"""
_TOMBSTONE = "content = '', status = 'deleted', usage = NULL, attachments = '[]'::jsonb, variant = 0, variants = '[]'"
DELETE_MESSAGE = f"""
WITH {_NEXT_REV}
UPDATE messages SET {_TOMBSTONE}, rev = (SELECT last_rev FROM next_rev)
WHERE id = $1 RETURNING {_MESSAGE_COLUMNS}
"""
# Every live message after $2 becomes a tombstone, each with a rev of its own, in seq order.
REWIND = f"""
WITH gone AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY seq) AS n FROM messages
    WHERE session_id = $1 AND seq > $2 AND status <> 'deleted'
),
bumped AS (
    UPDATE chat_sessions SET last_rev = last_rev + (SELECT count(*) FROM gone), updated_at = now()
    WHERE id = $1 RETURNING last_rev
)
UPDATE messages m SET {_TOMBSTONE}, rev = (SELECT last_rev FROM bumped) - (SELECT count(*) FROM gone) + g.n
FROM gone g WHERE m.id = g.id
RETURNING {", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))}
"""
# A copy of the session's messages up to $2 under new ids (replies point at the copies they answer); a
# copy was never sent by a client, so it keeps no client_id; a reply still streaming is copied as stopped.
FORK_MESSAGES = """
WITH src AS MATERIALIZED (
    SELECT *, gen_random_uuid() AS new_id FROM messages WHERE session_id = $1 AND seq <= $2
)
INSERT INTO messages (id, session_id, seq, rev, role, content, status, client_id, reply_to, usage, attachments,
                      kind, variant, variants, edited_at, created_at)
SELECT s.new_id, $3, s.seq, s.seq, s.role, s.content,
       CASE WHEN s.status = 'streaming' THEN 'stopped' ELSE s.status END, NULL,
       (SELECT r.new_id FROM src r WHERE r.id = s.reply_to), s.usage, s.attachments, s.kind, s.variant,
       s.variants, s.edited_at, s.created_at
FROM src s
"""
FORK_SESSION = f"""
INSERT INTO chat_sessions (user_id, persona_id, title, last_seq, last_rev)
SELECT user_id, persona_id, $3, $2, $2 FROM chat_sessions WHERE id = $1 AND user_id = $4
RETURNING {_SESSION_COLUMNS}
"""
MESSAGES_AFTER_REV = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND rev > $2 ORDER BY rev LIMIT $3
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
                    rev=record["rev"],
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
        kind: str = "message",
        variants: list[dict[str, Any]] | None = None,
    ) -> Message:
        """After `lock_next_seq` in the same transaction (the message takes the rev it raised)."""
        record = await conn.fetchrow(
            INSERT_MESSAGE,
            session_id,
            seq,
            role,
            content,
            status,
            client_id,
            reply_to,
            usage,
            attachments or [],
            kind,
            variants or [],
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

    # --- conversation controls ---

    async def owned_message(self, conn: asyncpg.Connection, message_id: UUID, user_id: UUID) -> Message | None:
        """The user's message, its session's row locked until the caller's transaction ends."""
        return _message(await conn.fetchrow(OWNED_MESSAGE, message_id, user_id))

    async def lock_session(self, conn: asyncpg.Connection, *, session_id: UUID, user_id: UUID) -> ChatSession | None:
        return _session(await conn.fetchrow(LOCK_SESSION, session_id, user_id))

    async def edit_message(self, conn: asyncpg.Connection, message_id: UUID, content: str) -> Message:
        message = _message(await conn.fetchrow(EDIT_MESSAGE, message_id, content))
        assert message is not None
        return message

    async def select_variant(self, conn: asyncpg.Connection, message_id: UUID, variant: int) -> Message | None:
        """None when the message has no such stored variant."""
        return _message(await conn.fetchrow(SELECT_VARIANT, message_id, variant))

    async def delete_message(self, conn: asyncpg.Connection, message_id: UUID) -> Message:
        message = _message(await conn.fetchrow(DELETE_MESSAGE, message_id))
        assert message is not None
        return message

    async def rewind(self, conn: asyncpg.Connection, session_id: UUID, to_seq: int) -> list[Message]:
        """The tombstones made, in seq order."""
        rows = [Message(**dict(r)) for r in await conn.fetch(REWIND, session_id, to_seq)]
        return sorted(rows, key=lambda m: m.seq)

    async def fork(
        self, conn: asyncpg.Connection, *, session_id: UUID, user_id: UUID, at_seq: int, title: str
    ) -> ChatSession | None:
        session = _session(await conn.fetchrow(FORK_SESSION, session_id, at_seq, title, user_id))
        if session is not None:
            await conn.execute(FORK_MESSAGES, session_id, at_seq, session.id)
        return session

    async def add_greeting(self, conn: asyncpg.Connection, session_id: UUID, variants: list[str]) -> Message:
        """The persona's greeting as a new session's first message (seq 1, kind greeting): the first variant
        selected, the others kept when there are several."""
        await conn.execute(SESSION_SEQ, session_id)
        now = datetime.now(UTC).isoformat()
        stored = (
            [
                {"index": i, "content": text, "status": "complete", "usage": None, "created_at": now}
                for i, text in enumerate(variants)
            ]
            if len(variants) > 1
            else []
        )
        return await self.insert_message(
            conn, session_id=session_id, seq=1, role="assistant", content=variants[0], kind="greeting", variants=stored
        )

    async def start_variant(
        self, conn: asyncpg.Connection, message_id: UUID, variants: list[dict[str, Any]], variant: int
    ) -> Message | None:
        return _message(await conn.fetchrow(START_VARIANT, message_id, variants, variant))

    async def start_continue(self, conn: asyncpg.Connection, message_id: UUID) -> Message | None:
        return _message(await conn.fetchrow(START_CONTINUE, message_id))

    async def newest_message(
        self, conn: asyncpg.Connection, session_id: UUID, *, role: str | None = None
    ) -> Message | None:
        """The session's newest message (of that role) that is not a tombstone."""
        return _message(await conn.fetchrow(NEWEST_MESSAGE, session_id, role))

    async def answered_by(self, conn: asyncpg.Connection, reply: Message) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(ANSWERED_BY, reply.session_id, reply.seq)]

    async def messages_after_rev(
        self, conn: asyncpg.Connection, *, session_id: UUID, after_rev: int, limit: int
    ) -> list[Message]:
        return [Message(**dict(r)) for r in await conn.fetch(MESSAGES_AFTER_REV, session_id, after_rev, limit)]
