"""ConversationService: changing a conversation after the fact. Edit a message, delete it (a tombstone keeps
its seq, so seqs stay gap-free), rewind to a seq, fork a session, and sync by `rev`.

Every change raises the session's `rev` counter in the same statement that makes it, under the session's row
lock (changes take their revs in commit order), and is emitted as `message:updated` to the user's sockets
and the chat room after commit; a client that applies them by message id, or that calls `sync {after_rev}`
with the last rev it saw, ends with exactly the server's conversation."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg
import structlog

from core import limits
from core.entities import ChatSession, Message, Principal
from core.errors import Busy, Conflict, NotFound, ValidationFailed
from core.events import Events, MessageUpdatedEvent, chat_room, user_room
from core.wire import MessageOut
from services.chat import ChatService
from services.replies import ReplyService
from storage.chat import ChatStore

log = structlog.get_logger(__name__)
SYNC_PAGE = 500
FORK_SUFFIX = " (fork)"


@dataclass(frozen=True)
class RevSync:
    messages: list[Message]
    has_more: bool
    last_seq: int
    last_rev: int


@dataclass(frozen=True)
class Rewound:
    tombstones: list[Message]
    last_rev: int


class ConversationService:
    def __init__(
        self, *, pool: asyncpg.Pool, events: Events, chat: ChatService, replies: ReplyService, message_max_chars: int
    ) -> None:
        self._pool = pool
        self._chat = chat
        self._events = events
        self._replies = replies
        self._max_chars = message_max_chars
        self._store = ChatStore()

    async def edit(
        self,
        user: Principal,
        message_id: UUID,
        content: str,
        *,
        session_id: UUID | None = None,
        regenerate: bool = False,
    ) -> Message:
        """A message's text changed in place (`edited_at` set). A streaming reply: 409 `busy`; a deleted one:
        409 `conflict`; another user's: 404. With `regenerate` (only on the chat's newest user message, else
        422): the reply after it gets a new variant, or, with no reply yet, one is started."""
        if len(content) > self._max_chars:
            raise ValidationFailed(
                f"content: at most {self._max_chars} characters",
                details=[{"field": "content", "message": f"at most {self._max_chars} characters"}],
            )
        async with self._pool.acquire() as conn, conn.transaction():
            message = await self._changeable(conn, user, message_id, session_id)
            if message.status == "deleted":
                raise Conflict("this message was deleted")
            after = await self._reply_after(conn, message) if regenerate else None
            edited = await self._store.edit_message(conn, message.id, content)
        await self._publish(user.id, [edited])
        if regenerate:
            if after is not None:
                await self._replies.regenerate(user, after.id)
            else:
                await self._replies.kick(message.session_id)
        return edited

    async def _reply_after(self, conn: asyncpg.Connection, message: Message) -> Message | None:
        """For an edit that regenerates: the reply after the chat's newest user message (None: none yet)."""
        newest_user = await self._store.newest_message(conn, message.session_id, role="user")
        if message.role != "user" or newest_user is None or newest_user.id != message.id:
            raise ValidationFailed(
                "regenerate: only with the chat's newest user message",
                details=[{"field": "regenerate", "message": "not the chat's newest user message"}],
            )
        newest = await self._store.newest_message(conn, message.session_id)
        return newest if newest is not None and newest.role == "assistant" and newest.seq > message.seq else None

    async def select(
        self, user: Principal, message_id: UUID, variant: int, *, session_id: UUID | None = None
    ) -> Message:
        """Pick the variant of a reply (or greeting) that counts: its text, status and usage become the
        message's, and only it reaches the prompt from now on. A variant the message does not have: 422."""
        async with self._pool.acquire() as conn, conn.transaction():
            message = await self._changeable(conn, user, message_id, session_id)
            count = len(message.all_variants)
            if not 0 <= variant < count:
                raise ValidationFailed(
                    f"variant: this message has {count} variant(s)",
                    details=[{"field": "variant", "message": f"between 0 and {max(0, count - 1)}"}],
                )
            if variant == message.variant:
                return message
            selected = await self._store.select_variant(conn, message.id, variant)
            assert selected is not None  # a second variant exists, so they are stored
        await self._publish(user.id, [selected])
        return selected

    async def delete(self, user: Principal, message_id: UUID, *, session_id: UUID | None = None) -> Message:
        """The message becomes a tombstone (`status: "deleted"`, no content, no variants, its seq kept).
        Deleting a tombstone again changes nothing; a streaming reply: 409 `busy` (stop it first)."""
        async with self._pool.acquire() as conn, conn.transaction():
            message = await self._changeable(conn, user, message_id, session_id)
            if message.status == "deleted":
                return message
            deleted = await self._store.delete_message(conn, message.id)
        await self._publish(user.id, [deleted])
        return deleted

    async def rewind(self, user: Principal, session_id: UUID, to_seq: int) -> Rewound:
        """Every message after `to_seq` becomes a tombstone; a reply streaming in the session is stopped (and
        stored) first. `to_seq` past the session's last seq: 422 `invalid` (the client's view is stale)."""
        session = await self._chat.get_session(user, session_id)
        if to_seq > session.last_seq:
            raise ValidationFailed(
                f"to_seq: the session's last seq is {session.last_seq}",
                details=[{"field": "to_seq", "message": f"at most {session.last_seq}"}],
            )
        await self._replies.stop_session(user, session_id)
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await self._store.lock_session(conn, session_id=session_id, user_id=user.id)
            if locked is None:
                raise NotFound("chat session not found")
            tombstones = await self._store.rewind(conn, session_id, to_seq)
            last_rev = locked.last_rev + len(tombstones)
        log.info("chat rewound", session_id=str(session_id), to_seq=to_seq, deleted=len(tombstones))
        await self._publish(user.id, tombstones)
        return Rewound(tombstones, last_rev)

    async def fork(self, user: Principal, session_id: UUID, at_seq: int) -> ChatSession:
        """A new session of the same persona holding copies (new ids) of the messages up to `at_seq`; the
        original is untouched. `at_seq` outside 1..last_seq: 422."""
        async with self._pool.acquire() as conn, conn.transaction():
            session = await self._store.lock_session(conn, session_id=session_id, user_id=user.id)
            if session is None:
                raise NotFound("chat session not found")
            if not 1 <= at_seq <= session.last_seq:
                raise ValidationFailed(
                    f"at_seq: between 1 and {session.last_seq}",
                    details=[{"field": "at_seq", "message": f"between 1 and {session.last_seq}"}],
                )
            title = session.title[: limits.SESSION_TITLE_MAX - len(FORK_SUFFIX)] + FORK_SUFFIX
            fork = await self._store.fork(conn, session_id=session_id, user_id=user.id, at_seq=at_seq, title=title)
        assert fork is not None  # the source is locked and the user's
        log.info("chat forked", session_id=str(session_id), fork_id=str(fork.id), at_seq=at_seq)
        return fork

    async def sync(self, user: Principal, session_id: UUID, *, after_rev: int) -> RevSync:
        """Every message inserted or changed after `after_rev` (tombstones included), in rev order."""
        async with self._pool.acquire() as conn:
            session = await self._store.owned_session(conn, session_id=session_id, user_id=user.id)
            if session is None:
                raise NotFound("chat session not found")
            rows = await self._store.messages_after_rev(
                conn, session_id=session_id, after_rev=after_rev, limit=SYNC_PAGE + 1
            )
        return RevSync(rows[:SYNC_PAGE], len(rows) > SYNC_PAGE, session.last_seq, session.last_rev)

    async def _changeable(
        self, conn: asyncpg.Connection, user: Principal, message_id: UUID, session_id: UUID | None
    ) -> Message:
        """The user's message (in `session_id` when given; REST names both), not streaming."""
        message = await self._store.owned_message(conn, message_id, user.id)
        if message is None or (session_id is not None and message.session_id != session_id):
            raise NotFound("message not found")
        if message.status == "streaming":
            raise Busy("this reply is still being written: stop it first")
        return message

    async def _publish(self, user_id: UUID, messages: list[Message]) -> None:
        for message in messages:
            await self._events.to_rooms(
                [user_room(user_id), chat_room(message.session_id)],
                MessageUpdatedEvent(message=MessageOut.model_validate(message)),
            )
