"""ChatService: chat sessions and the user's messages in them. REST handlers and socket events both
call these methods, so a message sent either way is deduplicated, ordered and fanned out the same."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from core.entities import ChatSession, Message, Principal
from core.errors import NotFound, RateLimited, ValidationFailed
from core.events import ChatDeletedEvent, Events, MessageNewEvent, chat_room, user_room
from core.wire import MessageOut
from services.files.service import FilesService
from services.greetings import greeting_variants
from services.message_writer import MessageWriter, Outcome
from services.quota import QuotaService
from storage.chat import ChatStore
from storage.personas import PersonaStore
from storage.ratelimit import RateLimiter

log = structlog.get_logger(__name__)
SYNC_PAGE = 500


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool  # False: this client_id was already stored, nothing new happened


@dataclass(frozen=True)
class SyncResult:
    messages: list[Message]
    has_more: bool
    last_seq: int
    last_rev: int


class _NotInserted(Exception):
    """Nothing was inserted: the client_id is already stored, or the session is not the user's."""


# Called after a user message is committed; the AI reply service plugs in here.
UserMessageHook = Callable[[Principal, Message], Awaitable[None]]


class ChatService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        events: Events,
        limiter: RateLimiter,
        send_rate_per_minute: int,
        message_max_chars: int,
        quota: QuotaService,
        files: FilesService,
    ) -> None:
        self._pool = pool
        self._quota = quota
        self._files = files
        self._max_chars = message_max_chars
        self._events = events
        self._limiter = limiter
        self._send_rate = send_rate_per_minute
        self._store = ChatStore()
        self._personas = PersonaStore()
        self._hooks: list[UserMessageHook] = []
        self._writer = MessageWriter(pool)

    def on_user_message(self, hook: UserMessageHook) -> None:
        self._hooks.append(hook)

    # --- sessions ------------------------------------------------------------------------------

    async def create_session(self, user: Principal, *, persona_id: UUID, title: str | None) -> ChatSession:
        """A persona with a greeting opens the chat with it: the first message (seq 1, kind greeting),
        `{{user}}` and `{{char}}` filled, its alternates kept as the message's other variants."""
        async with self._pool.acquire() as conn, conn.transaction():
            session = await self._store.create_session(conn, user_id=user.id, persona_id=persona_id, title=title)
            if session is None:
                raise NotFound("persona not found")
            await self._personas.record_activity(conn, persona_id, chats=1)
            persona = await self._personas.get(conn, persona_id)
            if persona is not None and persona.greeting.strip():
                variants = greeting_variants(
                    persona.greeting, persona.alternate_greetings, user=user.display_name, char=persona.name
                )
                await self._store.add_greeting(conn, session.id, variants)
                session = await self._store.owned_session(conn, session_id=session.id, user_id=user.id)
                assert session is not None
        return session

    async def get_session(self, user: Principal, session_id: UUID) -> ChatSession:
        async with self._pool.acquire() as conn:
            session = await self._store.owned_session(conn, session_id=session_id, user_id=user.id)
        if session is None:
            raise NotFound("chat session not found")
        return session

    async def list_sessions(
        self, user: Principal, *, after: tuple[bool, datetime, UUID] | None, limit: int
    ) -> list[ChatSession]:
        async with self._pool.acquire() as conn:
            return await self._store.list_sessions(conn, user_id=user.id, after=after, limit=limit)

    async def update_session(
        self, user: Principal, session_id: UUID, *, title: str | None, pinned: bool | None
    ) -> ChatSession:
        async with self._pool.acquire() as conn:
            session = await self._store.update_session(
                conn, session_id=session_id, user_id=user.id, title=title, pinned=pinned
            )
        if session is None:
            raise NotFound("chat session not found")
        return session

    async def delete_session(self, user: Principal, session_id: UUID) -> None:
        async with self._pool.acquire() as conn:
            deleted = await self._store.delete_session(conn, session_id=session_id, user_id=user.id)
        if not deleted:
            raise NotFound("chat session not found")
        await self._events.to_room(chat_room(session_id), ChatDeletedEvent(session_id=session_id))

    # --- messages ------------------------------------------------------------------------------

    async def send(
        self,
        user: Principal,
        session_id: UUID,
        *,
        client_id: UUID,
        content: str,
        attachments: Sequence[UUID] = (),
    ) -> SendResult:
        """Store the user's message with the session's next seq; a repeated client_id returns the stored
        message and triggers nothing. Events go out only after commit."""
        if not content.strip():
            raise ValidationFailed("content: must not be empty", details=[{"field": "content", "message": "empty"}])
        if len(content) > self._max_chars:
            raise ValidationFailed(
                f"content: longer than {self._max_chars} characters",
                details=[{"field": "content", "message": f"at most {self._max_chars} characters"}],
            )
        try:
            await self._limiter.check("send", self._send_rate, str(user.id))
        except RateLimited:
            # A retry of a stored message is not a new send: answer it even when limited.
            async with self._pool.acquire() as conn:
                stored = await self._stored_duplicate(conn, user, session_id, client_id)
            if stored is None:
                raise
            return SendResult(stored, created=False)
        if attachments:
            return await self._send_single(
                user, session_id, client_id=client_id, content=content, attachments=list(attachments)
            )
        outcome = await self._writer.write(user_id=user.id, session_id=session_id, client_id=client_id, content=content)
        if outcome is Outcome.SINGLE:
            return await self._send_single(user, session_id, client_id=client_id, content=content, attachments=None)
        if outcome is Outcome.NOT_INSERTED:
            return await self._duplicate(user, session_id, client_id)
        # Group-committed: a session without a persona, so nothing to charge and nobody to answer.
        await self.publish(user.id, outcome)
        return SendResult(outcome, created=True)

    async def _send_single(
        self, user: Principal, session_id: UUID, *, client_id: UUID, content: str, attachments: list[UUID] | None
    ) -> SendResult:
        """One message in its own transaction: a message to a persona is charged in it. Attachments are
        checked (the sender's own) and stored on the message as the file objects clients read."""
        files = await self._files.attachable(user, attachments) if attachments else None
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # One statement takes the next seq (locking the session row) and inserts, unless this
                    # client_id is already stored; no row back means duplicate or not yours (see below).
                    inserted = await self._store.insert_user_message(
                        conn,
                        session_id=session_id,
                        user_id=user.id,
                        client_id=client_id,
                        content=content,
                        attachments=files,
                    )
                    if inserted is None:
                        raise _NotInserted
                    message, persona_id = inserted
                    if attachments:
                        await self._files.mark_attached(conn, attachments)
                    charge = None
                    if persona_id is not None:
                        # A message to a persona is an AI message: it costs quota or a credit, charged in
                        # this transaction (QuotaExceeded rolls the message back: nothing is stored).
                        charge = await self._quota.charge_in(conn, user.id, message.id)
                        await self._personas.record_activity(conn, persona_id, messages=1)
            except (_NotInserted, asyncpg.UniqueViolationError):
                # Already stored (by an earlier try, or a concurrent retry that won the unique index;
                # the loser's transaction and its seq increment were rolled back): return that one.
                stored = await self._stored_duplicate(conn, user, session_id, client_id)
                if stored is None:
                    raise NotFound("chat session not found") from None
                return SendResult(stored, created=False)
        await self.publish(user.id, message)
        if charge is not None:
            await self._quota.announce(charge)
        if persona_id is not None:  # no persona (deleted): nobody to answer, nothing to start
            for hook in self._hooks:
                await hook(user, message)
        return SendResult(message, created=True)

    async def _duplicate(self, user: Principal, session_id: UUID, client_id: UUID) -> SendResult:
        async with self._pool.acquire() as conn:
            stored = await self._stored_duplicate(conn, user, session_id, client_id)
        if stored is None:
            raise NotFound("chat session not found")
        return SendResult(stored, created=False)

    async def publish(self, user_id: UUID, message: Message) -> None:
        """`message:new` once to each of the user's sockets and each socket watching the session."""
        await self._events.to_rooms(
            [user_room(user_id), chat_room(message.session_id)],
            MessageNewEvent(message=MessageOut.model_validate(message)),
        )

    async def history(
        self, user: Principal, session_id: UUID, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[Message]:
        async with self._pool.acquire() as conn:
            await self._require_owned(conn, user, session_id)
            if before_seq is not None:
                return await self._store.messages_before(
                    conn, session_id=session_id, before_seq=before_seq, limit=limit
                )
            return await self._store.messages_after(conn, session_id=session_id, after_seq=after_seq or 0, limit=limit)

    async def sync(self, user: Principal, session_id: UUID, *, after_seq: int) -> SyncResult:
        async with self._pool.acquire() as conn:
            session = await self._require_owned(conn, user, session_id)
            rows = await self._store.messages_after(
                conn, session_id=session_id, after_seq=after_seq, limit=SYNC_PAGE + 1
            )
        return SyncResult(
            rows[:SYNC_PAGE], has_more=len(rows) > SYNC_PAGE, last_seq=session.last_seq, last_rev=session.last_rev
        )

    async def _stored_duplicate(
        self, conn: asyncpg.Connection, user: Principal, session_id: UUID, client_id: UUID
    ) -> Message | None:
        """The message already stored under this client_id (NotFound if the session is not the user's)."""
        await self._require_owned(conn, user, session_id)
        return await self._store.message_by_client_id(conn, session_id=session_id, client_id=client_id)

    async def _require_owned(self, conn: asyncpg.Connection, user: Principal, session_id: UUID) -> ChatSession:
        session = await self._store.owned_session(conn, session_id=session_id, user_id=user.id)
        if session is None:
            raise NotFound("chat session not found")
        return session
