"""ReplyService: the AI turn. A reply is a server task keyed by the reply message's id (the stream id),
not by a socket: sockets only watch it. One reply at a time per chat session; when it ends, the next
one answers every user message that arrived meanwhile.

The streaming assistant row is the claim (a unique partial index allows one per session), so two nodes
kicking the same session cannot both start a reply; its lease (services/replies/leases.py) says whether
the process that claimed it is still alive."""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
from typing import Any, cast
from uuid import UUID

import asyncpg
import structlog

from core.entities import Message, Principal
from core.errors import AppError, Busy, Conflict, NotFound, StreamGone
from core.events import (
    AiChunkEvent,
    AiDoneEvent,
    AiErrorCode,
    AiErrorEvent,
    AiStartEvent,
    Events,
    MessageUpdatedEvent,
    StreamInFlight,
    chat_room,
    user_room,
)
from core.tasks import TaskSet
from core.wire import MessageOut, TokenUsage
from providers.ai.base import AIProvider, Prompt, ProviderError
from services.files.service import FilesService
from services.knowledge import KnowledgeService
from services.notifications import NotificationService, PresenceCount
from services.prompt import build_prompt
from services.quota import QuotaService
from services.replies import rework
from services.replies.attachments import AttachmentLoader
from services.replies.leases import Leases
from services.replies.settings import ReplySettings
from services.replies.stream import Live, ReplyStream
from services.replies.upstream import Upstream
from storage.chat import ChatStore
from storage.control_bus import ControlBus
from storage.personas import PersonaStore
from storage.stream_buffer import StreamBuffer, StreamInfo
from storage.users import UserStore

log = structlog.get_logger(__name__)
HISTORY_LIMIT = 60
PREVIEW_CHARS = 100  # of the reply, in the reply_ready notification's body


class StreamEnded(AppError):
    """`ai:resume` of a stream that is not live (ended, ended by its owner's death, or unknown)."""

    status = 410
    code = "stream_gone"


class _Abort(Exception):
    """Roll back a claim transaction: nothing to answer, or a reply is already running."""


class ReplyService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        provider: AIProvider,
        buffer: StreamBuffer,
        events: Events,
        bus: ControlBus,
        knowledge: KnowledgeService,
        quota: QuotaService,
        files: FilesService,
        settings: ReplySettings,
        notifications: NotificationService,
        presence: PresenceCount,
    ) -> None:
        self._quota = quota
        self._notifications = notifications
        self._presence = presence
        # ~4 characters a token: no file's text longer than the whole context can be of use.
        self._attachments = AttachmentLoader(files, max_text_chars=settings.context_tokens * 4)
        self._pool = pool
        self._upstream = Upstream(provider, settings)
        self._buffer = buffer
        self._events = events
        self._bus = bus
        self._knowledge = knowledge
        self._settings = settings
        self._chat = ChatStore()
        self._personas = PersonaStore()
        self._users = UserStore()
        self._live: dict[str, Live] = {}
        self._kicks = TaskSet()
        self._notices = TaskSet()  # reply_ready notifications, sent after the reply's commit
        self._closing = False
        self._answering: set[UUID] = set()  # sessions whose reply runs on this node
        self._changed: dict[UUID, asyncio.Event] = {}  # woken when a reply of the session starts or ends here
        self._leases = Leases(
            pool=pool,
            buffer=buffer,
            events=events,
            quota=quota,
            lease_seconds=settings.lease_seconds,
            live=self._live,
            kick=self._kick_quietly,
        )
        bus.on_command(self._on_command)

    def start(self) -> None:
        """Start renewing this process's leases and ending other processes' orphans."""
        self._leases.start()

    # --- starting replies ----------------------------------------------------------------------

    async def on_user_message(self, user: Principal, message: Message) -> None:
        """ChatService hook: answer in the background so the send's ack is not held up. While a reply of
        this session runs on this node there is nothing to do: it kicks again when it ends (and its
        kick, under the session lock, sees this already-committed message)."""
        if message.session_id in self._answering:
            return
        self._kicks.spawn(self._kick_quietly(message.session_id))

    async def _kick_quietly(self, session_id: UUID, *, newer_than: int = 0) -> None:
        try:
            await self.kick(session_id, newer_than=newer_than)
        except Exception:
            log.exception("could not start a reply", session_id=str(session_id))

    async def kick(self, session_id: UUID, *, newer_than: int = 0) -> Message | None:
        """Start a reply for the session's unanswered messages unless one is running; returns the claimed
        streaming row (this node then runs it) or None. With `newer_than`, only if some unanswered
        message came after that seq (after a failed reply: no automatic retry of the same turn)."""
        if self._closing:
            return None
        orphan: UUID | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Lock the session first: every user message with a lower seq is then committed and visible.
                slot = await self._chat.lock_next_seq(conn, session_id)
                if slot is None:
                    raise _Abort
                seq, persona_id, user_id = slot
                if persona_id is None:  # the persona was deleted: nobody to answer
                    raise _Abort
                streaming = await self._chat.streaming_reply(conn, session_id)
                if streaming is not None:
                    orphan = streaming[0] if streaming[1] else None
                    raise _Abort
                pending = await self._chat.unanswered(conn, session_id)
                if not pending or pending[-1].seq <= newer_than:
                    raise _Abort
                reply = await self._chat.insert_message(
                    conn,
                    session_id=session_id,
                    seq=seq,
                    role="assistant",
                    content="",
                    status="streaming",
                    reply_to=pending[-1].id,
                )
                await self._chat.claim_lease(conn, reply.id, seconds=self._settings.lease_seconds)
        except (_Abort, asyncpg.UniqueViolationError):
            if orphan is not None:  # its owner died: end it, which kicks the session again
                await self.end_orphan(orphan)
            return None
        live = Live()
        self._live[str(reply.id)] = live
        self._answering.add(session_id)
        self._wake(session_id)
        live.task = asyncio.create_task(self._run(reply, user_id, persona_id, pending, live), name=f"reply-{reply.id}")
        return reply

    # --- reworking the newest reply ------------------------------------------------------------

    async def regenerate(self, user: Principal, message_id: UUID, *, session_id: UUID | None = None) -> Message:
        """A new variant of the chat's newest reply, streamed as any reply is (`ai:start` names the message
        and the variant) and charged as one AI message, given back if it fails. Every variant is kept; the
        new one is selected."""
        return await self._rework(user, message_id, continuing=False, session_id=session_id)

    async def continue_reply(self, user: Principal, message_id: UUID) -> Message:
        """More text streamed onto the chat's newest reply (charged as one AI message, given back if it
        fails); the stored reply is its text so far followed by the new text."""
        return await self._rework(user, message_id, continuing=True)

    async def _rework(
        self, user: Principal, message_id: UUID, *, continuing: bool, session_id: UUID | None = None
    ) -> Message:
        if self._closing:
            raise Busy("the server is shutting down: try again in a moment")
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await rework.claim(
                conn,
                self._chat,
                self._quota,
                user,
                message_id,
                continuing=continuing,
                lease_seconds=self._settings.lease_seconds,
                session_id=session_id,
            )
        await self._quota.announce(claimed.charge)
        reply = claimed.reply
        live = Live()
        self._live[str(reply.id)] = live
        self._answering.add(reply.session_id)
        self._wake(reply.session_id)
        live.task = asyncio.create_task(
            self._run(reply, user.id, claimed.persona_id, claimed.pending, live, claimed.rework),
            name=f"reply-{reply.id}-{claimed.rework.turn}",
        )
        return reply

    # --- running a reply -----------------------------------------------------------------------

    async def _run(
        self,
        reply: Message,
        user_id: UUID,
        persona_id: UUID | None,
        pending: list[Message],
        live: Live,
        redo: rework.Rework | None = None,
    ) -> None:
        structlog.contextvars.bind_contextvars(stream_id=str(reply.id), user_id=str(user_id))
        rooms = [user_room(user_id), chat_room(reply.session_id)]
        chunk_room = chat_room(reply.session_id)

        async def send_chunk(index: int, text: str) -> None:
            await self._buffer.append(str(reply.id), index, text)
            await self._events.to_room(chunk_room, AiChunkEvent(stream_id=reply.id, index=index, text=text))

        stream = ReplyStream(live.queue, window=self._settings.coalesce_seconds, send=send_chunk)
        started = time.perf_counter()
        try:
            await self._begin(reply, user_id, rooms)
            prompt = await self._prompt(reply, user_id, persona_id, pending, redo)
            await stream.run(self._upstream.produce(prompt, live.queue))
        except Exception as err:
            log.exception("reply failed")
            stream.fail(ProviderError("internal", f"reply failed: {type(err).__name__}"))
        finally:
            await self._end(reply, rooms, pending, stream, started, user_id=user_id, persona_id=persona_id, redo=redo)
        # Messages that arrived while this reply streamed get the next one. After a failure only those:
        # the failed turn is answered again when the user sends again, not in a loop.
        await self._kick_quietly(reply.session_id, newer_than=reply.seq if stream.error is not None else 0)

    async def _begin(self, reply: Message, user_id: UUID, rooms: list[str]) -> None:
        """Open the reply's stream buffer and announce it (`ai:start`)."""
        reply_to = str(reply.reply_to) if reply.reply_to else None
        await self._buffer.open(StreamInfo(str(reply.id), str(reply.session_id), str(user_id), reply_to))
        start = AiStartEvent(
            stream_id=reply.id,
            session_id=reply.session_id,
            reply_to=reply.reply_to,
            message_id=reply.id,
            variant=reply.variant,
            message=MessageOut.model_validate(reply),
        )
        await self._events.to_rooms(rooms, start)

    async def _prompt(
        self,
        reply: Message,
        user_id: UUID,
        persona_id: UUID | None,
        pending: list[Message],
        redo: rework.Rework | None = None,
    ) -> Prompt:
        async with self._pool.acquire() as conn:
            user = await self._users.get(conn, user_id)
            persona = await self._personas.get(conn, persona_id) if persona_id else None
            history = await self._chat.recent(conn, reply.session_id, before_seq=reply.seq, limit=HISTORY_LIMIT)
        if redo is not None and redo.continuing:
            history = rework.continuation_history(history, reply, redo)
        knowledge: list[str] = []
        if persona is not None and self._settings.knowledge_chunks:
            query = " ".join(m.content for m in pending)[-2000:]
            chunks = await self._knowledge.relevant_chunks(persona.id, query, limit=self._settings.knowledge_chunks)
            knowledge = [c.content for c in chunks]
        attachments = await self._attachments.load(user_id, history, pending)
        return build_prompt(
            persona,
            history,
            knowledge,
            context_tokens=self._settings.context_tokens,
            max_output_tokens=self._settings.max_output_tokens,
            user_name=user.display_name if user else "the user",
            attachments=attachments,
        )

    async def _end(
        self,
        reply: Message,
        rooms: list[str],
        pending: list[Message],
        stream: ReplyStream,
        started: float,
        *,
        user_id: UUID,
        persona_id: UUID | None,
        redo: rework.Rework | None = None,
    ) -> None:
        """Store the reply, announce its end, refund what it did not deliver; then let the session go."""
        try:
            if stream.error is not None:
                await self._fail(reply, rooms, stream.error, redo)
            else:
                stored = await self._complete(reply, rooms, stream, started, redo)
                if stored is not None and stored.status == "complete":
                    # In the background: the notification must neither delay nor fail the reply.
                    self._notices.spawn(self._reply_ready(stored, user_id, persona_id), name=f"reply-ready-{reply.id}")
            if stream.delivered_nothing:
                # Nothing was delivered: what this work was charged comes back (a new reply: the answered
                # messages' sends; a regeneration or continuation: its own turn).
                if redo is not None:
                    await self._quota.refund_turn(reply.id, redo.turn)
                else:
                    await self._quota.refund([m.id for m in pending])
        except Exception:  # the next reply must still start (in _run), whatever failed here
            log.exception("could not end the reply")
        finally:
            self._live.pop(str(reply.id), None)
            # Before the kick in _run: a message whose hook was skipped is already committed, so the
            # kick (under the session lock) sees it.
            self._answering.discard(reply.session_id)
            self._wake(reply.session_id)
            structlog.contextvars.unbind_contextvars("stream_id", "user_id")

    async def _fail(
        self, reply: Message, rooms: list[str], error: ProviderError, redo: rework.Rework | None = None
    ) -> None:
        restored: Message | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if redo is not None and redo.continuing:
                # The reply goes back to what it was before it was continued.
                restored = await self._chat.finish_reply(
                    conn, reply.id, content=redo.prefix, status=redo.previous_status, usage=redo.previous_usage
                )
            else:
                # Nothing half-made is stored as a reply; the row stays (seqs are gap-free) as failed.
                failed_row = await self._chat.finish_reply(conn, reply.id, content="", status="failed", usage=None)
                if redo is not None and failed_row is not None:
                    # A failed regeneration keeps its variant (failed) and selects the one before it again.
                    restored = await self._chat.select_variant(conn, reply.id, redo.previous_variant)
        # ProviderError codes are plain strings; the model checks that this one is an ai:error code.
        failed = AiErrorEvent(stream_id=reply.id, code=cast(AiErrorCode, error.code), message=error.message)
        await self._buffer.finish(str(reply.id), failed.name, failed.model_dump(mode="json"))
        await self._events.to_rooms(rooms, failed)
        if restored is not None:
            await self._events.to_rooms(rooms, MessageUpdatedEvent(message=MessageOut.model_validate(restored)))
        log.warning("reply failed", code=error.code, error=error.message)

    async def _complete(
        self, reply: Message, rooms: list[str], stream: ReplyStream, started: float, redo: rework.Rework | None = None
    ) -> Message | None:
        """Store the reply and announce it (`ai:done`); the stored row, or None when another node ended it."""
        status = "stopped" if stream.stopped else "complete"
        usage = stream.usage
        prefix = redo.prefix if redo is not None else ""
        async with self._pool.acquire() as conn:
            stored = await self._chat.finish_reply(
                conn, reply.id, content=prefix + "".join(stream.texts), status=status, usage=usage
            )
        if stored is None:  # marked failed as stale by another node meanwhile; nothing more to say
            return None
        done = AiDoneEvent(
            stream_id=reply.id,
            message=MessageOut.model_validate(stored),
            usage=None if usage is None else TokenUsage(**usage),
        )
        await self._buffer.finish(str(reply.id), done.name, done.model_dump(mode="json"))
        await self._events.to_rooms(rooms, done)
        if redo is not None:  # a stored message changed: announced as every change is
            await self._events.to_rooms(rooms, MessageUpdatedEvent(message=done.message))
        log.info("reply done", status=status, chunks=len(stream.texts), seconds=round(time.perf_counter() - started, 3))
        return stored

    async def _reply_ready(self, reply: Message, user_id: UUID, persona_id: UUID | None) -> None:
        """Tell a user who was not watching (no live socket on any node) that the reply is there: the
        `reply_ready` notification, pushed to their phones when they want it. Best effort."""
        try:
            if await self._presence.count(user_id) > 0:
                return
            async with self._pool.acquire() as conn:
                persona = await self._personas.get(conn, persona_id) if persona_id else None
            data = {"session_id": str(reply.session_id), "message_id": str(reply.id)}
            if persona_id is not None:
                data["persona_id"] = str(persona_id)
            await self._notifications.notify(
                user_id,
                "reply_ready",
                title=persona.name if persona is not None else "New reply",
                body=preview(reply.content, PREVIEW_CHARS),
                data=data,
            )
        except Exception:
            log.exception("reply_ready not sent", message_id=str(reply.id))

    # --- leases and orphans --------------------------------------------------------------------

    async def end_orphan(self, reply_id: UUID) -> Message | None:
        """End a reply whose owner's lease expired (see Leases.end_orphan); a no-op for one running here
        or one another process ended first."""
        return await self._leases.end_orphan(reply_id)

    def _wake(self, session_id: UUID) -> None:
        event = self._changed.pop(session_id, None)
        if event is not None:
            event.set()

    async def _changed_here(self, session_id: UUID, seconds: float) -> None:
        """Wait until a reply of the session starts or ends on this process (or `timeout` passes)."""
        event = self._changed.setdefault(session_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    # --- stopping ------------------------------------------------------------------------------

    async def stop(self, user: Principal, stream_id: str) -> None:
        """Stop a reply wherever it runs; the text so far is kept, marked stopped."""
        info = await self._buffer.info(stream_id)
        if info is None or info.user_id != str(user.id):
            raise NotFound("stream not found")
        await self._bus.publish({"op": "stop", "stream_id": stream_id})

    async def stop_session(self, user: Principal, session_id: UUID, *, wait_seconds: float = 15.0) -> None:
        """Stop the session's streaming reply wherever it runs and return once it is stored (stopped), or
        at once when none streams (a rewind stops it first). The caller checked that the session is the
        user's."""
        try:
            async with asyncio.timeout(wait_seconds):
                while True:
                    async with self._pool.acquire() as conn:
                        streaming = await self._chat.streaming_reply(conn, session_id)
                    if streaming is None:
                        return
                    reply_id, expired = streaming
                    if expired:
                        await self.end_orphan(reply_id)
                        continue
                    await self._bus.publish({"op": "stop", "stream_id": str(reply_id)})
                    await self._until_ended(session_id, str(reply_id))
        except TimeoutError as err:
            raise Busy("the reply did not stop in time; try again") from err

    async def _on_command(self, command: dict[str, Any]) -> None:
        if command.get("op") == "stop":
            live = self._live.get(str(command.get("stream_id")))
            if live is not None:
                live.stop()

    # --- reading -------------------------------------------------------------------------------

    async def owned_stream(self, user: Principal, stream_id: str) -> StreamInfo:
        info = await self._buffer.info(stream_id)
        if info is None or info.user_id != str(user.id):
            raise NotFound("stream not found")
        return info

    async def live_stream(self, user: Principal, stream_id: str) -> StreamInfo:
        """A reply of the user's that is streaming now, under a live lease (`ai:resume`): NotFound for
        someone else's or no reply; StreamEnded once it ended (an orphan found here is ended first)."""
        async with self._pool.acquire() as conn:
            owner = await self._chat.reply_owner(conn, UUID(stream_id))
        if owner is None or owner.user_id != user.id:
            raise NotFound("stream not found")
        if owner.status == "streaming" and owner.expired:
            await self.end_orphan(UUID(stream_id))
        elif owner.live:
            info = await self._buffer.info(stream_id)
            if info is not None:
                return info
        raise StreamEnded("the stream has ended; read the reply with sync")

    async def live_streams(self, session_id: UUID) -> list[StreamInFlight]:
        """Streams in flight for `sync`: those the stream buffer holds whose lease is alive (a dead
        owner's reply is not listed: it is ended, and its end announced, by whoever finds it first)."""
        buffered = await self._buffer.live(str(session_id))
        if not buffered:
            return []
        async with self._pool.acquire() as conn:
            alive = {str(i) for i in await self._chat.live_replies(conn, session_id)}
        return [
            StreamInFlight(
                stream_id=UUID(i.stream_id),
                session_id=UUID(i.session_id),
                reply_to=UUID(i.reply_to) if i.reply_to else None,
                next_index=n,
            )
            for i, n in buffered
            if i.stream_id in alive
        ]

    async def reply_for(self, user: Principal, session_id: UUID, seq: int, *, wait_seconds: float) -> Message:
        """The reply that answers the user's message `seq`, once it has started (REST `generate` and
        `stream`). Waits on this process's own signal when the reply before it runs here, or on the
        stream buffer's end when it runs elsewhere: one database read per reply, never polling."""
        try:
            async with asyncio.timeout(wait_seconds):
                while True:
                    async with self._pool.acquire() as conn:
                        session = await self._chat.owned_session(conn, session_id=session_id, user_id=user.id)
                        if session is None:
                            raise NotFound("chat session not found")
                        reply = await self._chat.first_reply_after(conn, session_id, seq)
                        streaming = await self._chat.streaming_reply(conn, session_id)
                    if reply is not None:
                        return reply
                    if session.persona_id is None:
                        raise Conflict(
                            "this chat's persona was deleted: nobody can reply; start a chat with another persona",
                            code="no_persona",
                        )
                    if streaming is None:
                        claimed = await self.kick(session_id)
                        if claimed is None:  # claimed elsewhere a moment ago, or a race: look again soon
                            await self._changed_here(session_id, 1.0)
                    elif streaming[1]:
                        await self.end_orphan(streaming[0])
                    else:
                        await self._until_ended(session_id, str(streaming[0]))
        except TimeoutError as err:
            raise AppError("no reply started in time", code="provider_timeout", status=504) from err

    async def _until_ended(self, session_id: UUID, stream_id: str) -> None:
        live = self._live.get(stream_id)
        if live is not None:
            await self._changed_here(session_id, self._settings.lease_seconds)
            return
        try:  # another process runs it: its buffer's end entry says when it is over
            async for _ in self._buffer.follow(stream_id, 2**62):
                pass
        except StreamGone:  # not in the shared buffer (a Redis outage): wait a little, then look again
            await self._changed_here(session_id, 1.0)

    async def message(self, message_id: UUID) -> Message | None:
        async with self._pool.acquire() as conn:
            return await self._chat.message(conn, message_id)

    @property
    def buffer(self) -> StreamBuffer:
        return self._buffer

    # --- shutdown ------------------------------------------------------------------------------

    async def shutdown(self, *, grace_seconds: float) -> None:
        """Let running replies finish for a while, then stop the rest (stored as stopped)."""
        self._closing = True
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            log.info("waiting for replies to finish", count=len(tasks))
            _, still = await asyncio.wait(tasks, timeout=grace_seconds)
            for live in list(self._live.values()):
                live.stop()
            if still:
                await asyncio.wait(still, timeout=5)
        self._kicks.cancel_all()
        notices = list(self._notices)
        if notices:  # replies that just ended: their notifications need the pool, which closes after this
            await asyncio.wait(notices, timeout=2)
            self._notices.cancel_all()
        # Last: the replies above held their leases while finishing.
        await self._leases.close()


# Code points that belong to the character before them, besides marks (accents, vowel signs, keycaps): a cut
# just before one would split a character as the reader sees it (ZWJ sequences, skin tones, tag flags).
_JOINERS = frozenset({0x200C, 0x200D, *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)})
_REGIONAL = range(0x1F1E6, 0x1F200)


def _joins_previous(ch: str) -> bool:
    return ord(ch) in _JOINERS or unicodedata.category(ch) in ("Mn", "Mc", "Me")


def preview(text: str, limit: int) -> str:
    """The first `limit` characters of `text`, with "…" when it is longer; the cut moves back rather than
    split a character made of several code points (accents, emoji sequences, flags)."""
    if len(text) <= limit:
        return text
    cut = limit
    while cut > 0 and (_joins_previous(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    # A flag is a pair of regional indicators: an odd run before the cut would split the last pair.
    run = 0
    while run < cut and ord(text[cut - 1 - run]) in _REGIONAL:
        run += 1
    if run % 2 and ord(text[cut]) in _REGIONAL:
        cut -= 1
    return text[:cut].rstrip() + "\u2026"
