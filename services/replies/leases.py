"""Reply leases: the streaming row is the claim, and it holds while its lease does. This process renews
the leases of all its replies every LEASE_TICK of the lease and, as often, looks for other processes'
replies whose lease ran out: their owner died (SIGKILL, power), so the first process to see one ends it
(`stopped` with what the stream buffer holds, else `failed` and refunded), announces it, and answers
the messages that waited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol
from uuid import UUID

import asyncpg
import structlog

from core.entities import Message
from core.events import AiDoneEvent, AiErrorEvent, Events, chat_room, user_room
from core.wire import MessageOut
from services.quota import QuotaService
from services.replies.stream import Live
from storage.chat import ChatStore
from storage.stream_buffer import StreamBuffer

log = structlog.get_logger(__name__)
LEASE_TICK = 0.25  # of the lease: renew and look for orphans four times per lease
REAP_BATCH = 100


class Kick(Protocol):
    """Answer the session's waiting messages (ReplyService's quiet kick)."""

    async def __call__(self, session_id: UUID, *, newer_than: int = 0) -> None: ...


class Leases:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        buffer: StreamBuffer,
        events: Events,
        quota: QuotaService,
        lease_seconds: float,
        live: Mapping[str, Live],
        kick: Kick,
    ) -> None:
        self._pool = pool
        self._buffer = buffer
        self._events = events
        self._quota = quota
        self._lease_seconds = lease_seconds
        self._live = live  # this process's replies, by stream id (the service's own map)
        self._kick = kick
        self._chat = ChatStore()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="reply-leases")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _keep(self) -> None:
        tick = self._lease_seconds * LEASE_TICK
        while True:
            await asyncio.sleep(tick)
            try:
                await self._renew_and_reap()
            except Exception as err:  # noqa: BLE001 - the database may be down: try again next tick
                log.warning("reply leases not renewed", error=type(err).__name__)

    async def _renew_and_reap(self) -> None:
        ids = [UUID(stream_id) for stream_id in self._live]
        async with self._pool.acquire() as conn:
            if ids:
                held = await self._chat.renew_leases(conn, ids, seconds=self._lease_seconds)
                for lost in set(ids) - held:  # ended by another process while we could not renew
                    live = self._live.get(str(lost))
                    if live is not None:
                        log.warning("reply lease lost; stopping it here", stream_id=str(lost))
                        live.stop()
            orphans = await self._chat.expired_replies(conn, limit=REAP_BATCH)
        for orphan in orphans:
            await self.end_orphan(orphan)

    async def end_orphan(self, reply_id: UUID) -> Message | None:
        """End a reply whose owner's lease expired: `stopped` with the text its stream buffer holds, or
        `failed` (and refunded) when nothing was buffered; announce it; answer the messages that waited.
        Only one process wins the row; for the others this is a no-op."""
        stream_id = str(reply_id)
        if stream_id in self._live:
            return None  # ours: our renewal simply lagged; the lease is renewed on the next tick
        text = "".join(await self._buffer.chunks(stream_id))
        async with self._pool.acquire() as conn:
            owner = await self._chat.reply_owner(conn, reply_id)
            current = await self._chat.message(conn, reply_id)
            if owner is None or current is None:
                return None
            # A reworked reply (a regeneration has stored variants; a continuation streams on from its text)
            # was charged on its own turn, its rev; a new one, on the sends it answered.
            reworked = bool(current.variants) or bool(current.content)
            prefix = current.content
            # What a failed new reply answered (to refund): the messages before it still unanswered.
            pending = [] if text or reworked else await self._chat.unanswered(conn, owner.session_id)
            status = "stopped" if prefix + text else "failed"
            ended = await self._chat.end_orphan(conn, reply_id, content=prefix + text, status=status)
        if ended is None:
            return None
        pending = [m for m in pending if m.seq < ended.seq]
        rooms = [user_room(owner.user_id), chat_room(ended.session_id)]
        if not text and reworked:
            await self._quota.refund_turn(reply_id, current.rev)
        if ended.status == "failed":
            await self._quota.refund([m.id for m in pending])
            event: AiErrorEvent | AiDoneEvent = AiErrorEvent(
                stream_id=reply_id, code="reply_lost", message="the server running this reply stopped; send again"
            )
        else:
            event = AiDoneEvent(stream_id=reply_id, message=MessageOut.model_validate(ended), usage=None)
        await self._buffer.finish(stream_id, event.name, event.model_dump(mode="json"))
        await self._events.to_rooms(rooms, event)
        log.warning("orphaned reply ended", stream_id=stream_id, status=ended.status, chars=len(text))
        await self._kick(ended.session_id, newer_than=ended.seq if ended.status == "failed" else 0)
        return ended
