"""Group commit of user messages. Every send waiting at the same moment goes into one transaction: the
sessions' rows are locked (in id order), stored client_ids are looked up, seqs are numbered and all the
rows are inserted with one statement. Five round trips per batch instead of five per message, with the
same guarantees as a send on its own: gap-free ordered seqs, one row per client_id, ack after commit.

What the batch does not do is left to ChatService's single send, which it reports back as `SINGLE`:
messages to a persona (they are charged, with their own rollback when the quota is spent) and any
batch that failed (a concurrent duplicate from another process, a deadlock, a lost connection: the
single send handles each of those already)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from storage.chat import ChatStore, MessageRow, NewUserMessage

log = structlog.get_logger(__name__)
MAX_BATCH = 256


class Outcome(enum.Enum):
    NOT_INSERTED = "not_inserted"  # client_id already stored (or sent twice in the batch), or not the user's session
    SINGLE = "single"  # the caller sends this one on its own


@dataclass
class _Pending:
    user_id: UUID
    session_id: UUID
    client_id: UUID
    content: str
    future: asyncio.Future[MessageRow | Outcome] = field(repr=False)


class MessageWriter:
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._store = ChatStore()
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # transactions so far (the tests read it)

    async def write(self, *, user_id: UUID, session_id: UUID, client_id: UUID, content: str) -> MessageRow | Outcome:
        """The committed message, or what to do instead. Waits for the batch it joins to commit."""
        future: asyncio.Future[MessageRow | Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(user_id, session_id, client_id, content, future))
        if self._writer is None:
            # One writer at a time: sends that arrive while a batch commits form the next batch.
            self._writer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its own future: the batch runs in the writer task regardless.
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self.batches += 1
                try:
                    outcomes = await self._commit(batch)
                except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
                    _settle(batch + self._queue, [Outcome.SINGLE] * (len(batch) + len(self._queue)))
                    self._queue = []
                    raise
                except Exception as err:  # noqa: BLE001 - every message then takes the single path
                    log.info("batched send fell back to single sends", error=repr(err), size=len(batch))
                    outcomes = [Outcome.SINGLE] * len(batch)
                _settle(batch, outcomes)
        finally:
            self._writer = None

    async def _commit(self, batch: list[_Pending]) -> list[MessageRow | Outcome]:
        outcomes: list[MessageRow | Outcome] = [Outcome.NOT_INSERTED] * len(batch)
        async with self._pool.acquire() as conn, conn.transaction():
            sessions = await self._store.lock_sessions(conn, sorted({p.session_id for p in batch}))
            stored = await self._store.stored_client_ids(conn, [(p.session_id, p.client_id) for p in batch])
            last_seqs: dict[UUID, int] = {}
            rows: list[NewUserMessage] = []
            slot: dict[tuple[UUID, UUID], int] = {}  # (session, client_id) -> index in batch
            for i, p in enumerate(batch):
                session = sessions.get(p.session_id)
                key = (p.session_id, p.client_id)
                if session is None or session.user_id != p.user_id or key in stored or key in slot:
                    continue  # NOT_INSERTED: the caller looks up the stored one, or answers not found
                if session.persona_id is not None:
                    outcomes[i] = Outcome.SINGLE
                    continue
                seq = last_seqs.get(p.session_id, session.last_seq) + 1
                last_seqs[p.session_id] = seq
                slot[key] = i
                rows.append(NewUserMessage(p.session_id, seq, p.content, p.client_id))
            if rows:
                for message in await self._store.insert_user_messages(conn, last_seqs=last_seqs, rows=rows):
                    assert message.client_id is not None
                    outcomes[slot[(message.session_id, message.client_id)]] = message
        return outcomes


def _settle(batch: list[_Pending], outcomes: list[MessageRow | Outcome]) -> None:
    for pending, outcome in zip(batch, outcomes, strict=True):
        if not pending.future.done():
            pending.future.set_result(outcome)
