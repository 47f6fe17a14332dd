"""Group commit of user messages. Sends waiting at the same moment are stored by one statement
(storage/chat.py GROUP_SEND): one round trip per batch instead of several per message, with the same
guarantees as a send on its own: gap-free ordered seqs, one row per client_id, ack after commit.

Up to `depth` batches are in flight at once, and batches in flight never share a session: a message
whose session is in a running batch waits for the next one. So seqs follow arrival order within a
session, a retried client_id never meets its first try in two batches at once, and PostgreSQL stores
one batch while this process answers the one before.

What the batch does not do is left to ChatService's single send, which it reports back as `SINGLE`:
messages to a persona (they are charged, with their own rollback when the quota is spent) and any
batch that failed (a concurrent duplicate from another process, a lost connection: the single send
handles each of those already)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from core.entities import Message
from core.tasks import TaskSet
from storage.chat import ChatStore, NewUserMessage

log = structlog.get_logger(__name__)
MAX_BATCH = 256
PIPELINE_DEPTH = 6  # batches in flight at once
# While a batch runs, another starts only with this many messages waiting; fewer wait for a batch to
# finish, so a steady stream of sends still forms large batches.
MIN_OVERLAPPING_BATCH = 8


class Outcome(enum.Enum):
    NOT_INSERTED = "not_inserted"  # client_id already stored (or sent twice in the batch), or not the user's session
    SINGLE = "single"  # the caller sends this one on its own


@dataclass
class _Pending:
    user_id: UUID
    session_id: UUID
    client_id: UUID
    content: str
    future: asyncio.Future[Message | Outcome] = field(repr=False)


class MessageWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = MAX_BATCH,
        depth: int = PIPELINE_DEPTH,
        min_overlapping: int = MIN_OVERLAPPING_BATCH,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._depth = depth
        self._min_overlapping = min_overlapping
        self._store = ChatStore()
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._inflight = TaskSet()
        self._busy: set[UUID] = set()  # sessions of the batches in flight
        self.batches = 0  # statements so far (the tests read it)

    async def write(self, *, user_id: UUID, session_id: UUID, client_id: UUID, content: str) -> Message | Outcome:
        """The committed message, or what to do instead. Waits for the batch it joins to commit."""
        future: asyncio.Future[Message | Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(user_id, session_id, client_id, content, future))
        if self._writer is None:
            # One task forms batches: sends that arrive while batches run form the next ones.
            self._writer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its own future: the batch runs in its own task regardless.
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take() if self._may_start() else []
                if not batch:  # at the depth limit, too few waiting, or all their sessions busy
                    await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                    continue
                self.batches += 1
                sessions = {p.session_id for p in batch}
                self._busy |= sessions
                self._inflight.spawn(self._run(batch, sessions))
                await asyncio.sleep(0)  # let the batch send its statement before the next one forms
        except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
            _settle(self._queue, [Outcome.SINGLE] * len(self._queue))
            self._queue = []
            raise
        finally:
            self._writer = None

    def _may_start(self) -> bool:
        if not self._inflight:
            return True
        return len(self._inflight) < self._depth and len(self._queue) >= self._min_overlapping

    def _take(self) -> list[_Pending]:
        """The oldest waiting sends whose sessions are not in a running batch, in arrival order."""
        batch: list[_Pending] = []
        rest: list[_Pending] = []
        for p in self._queue:
            if len(batch) < self._max_batch and p.session_id not in self._busy:
                batch.append(p)
            else:
                rest.append(p)
        self._queue = rest
        return batch

    async def _run(self, batch: list[_Pending], sessions: set[UUID]) -> None:
        try:
            outcomes = await self._commit(batch)
        except asyncio.CancelledError:
            _settle(batch, [Outcome.SINGLE] * len(batch))
            raise
        except Exception as err:  # noqa: BLE001 - every message then takes the single path
            log.info("batched send fell back to single sends", error=repr(err), size=len(batch))
            outcomes = [Outcome.SINGLE] * len(batch)
        finally:
            self._busy -= sessions
        _settle(batch, outcomes)

    async def _commit(self, batch: list[_Pending]) -> list[Message | Outcome]:
        rows = [NewUserMessage(p.session_id, p.user_id, p.client_id, p.content) for p in batch]
        async with self._pool.acquire() as conn:
            stored, persona = await self._store.group_send(conn, rows)
        outcomes: list[Message | Outcome] = [Outcome.NOT_INSERTED] * len(batch)
        first: dict[tuple[UUID, UUID], int] = {}
        for i, p in enumerate(batch):
            key = (p.session_id, p.client_id)
            first.setdefault(key, i)
            if key in persona:
                outcomes[i] = Outcome.SINGLE
        for message in stored:
            assert message.client_id is not None
            outcomes[first[(message.session_id, message.client_id)]] = message
        return outcomes


def _settle(batch: list[_Pending], outcomes: list[Message | Outcome]) -> None:
    for pending, outcome in zip(batch, outcomes, strict=True):
        if not pending.future.done():
            pending.future.set_result(outcome)
