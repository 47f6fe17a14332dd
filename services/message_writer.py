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
PIPELINE_DEPTH = 2  # batches in flight at once


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
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = MAX_BATCH, depth: int = PIPELINE_DEPTH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._depth = depth
        self._store = ChatStore()
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions so far (the tests read it)

    async def write(self, *, user_id: UUID, session_id: UUID, client_id: UUID, content: str) -> MessageRow | Outcome:
        """The committed message, or what to do instead. Waits for the batch it joins to commit."""
        future: asyncio.Future[MessageRow | Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(user_id, session_id, client_id, content, future))
        if self._writer is None:
            # One task forms batches: sends that arrive while earlier batches commit form the next one.
            self._writer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its own future: the batch runs in its own task regardless.
        return await future

    async def _drain(self) -> None:
        """Start batches in arrival order, up to `depth` at once. A batch starts only once the one before
        it holds its sessions' row locks: where they share a session, the later batch's lock waits for
        the earlier commit, so seqs follow arrival order. Meanwhile the earlier batch's insert and commit
        overlap the later batch's set-up, so PostgreSQL and this process work at the same time."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if len(self._inflight) >= self._depth:
                    done, _ = await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                    self._inflight -= done
                    continue
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self.batches += 1
                locked: asyncio.Future[None] = loop.create_future()
                task = asyncio.create_task(self._run(batch, locked))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await locked
        except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
            _settle(self._queue, [Outcome.SINGLE] * len(self._queue))
            self._queue = []
            raise
        finally:
            self._writer = None

    async def _run(self, batch: list[_Pending], locked: asyncio.Future[None]) -> None:
        try:
            outcomes = await self._commit(batch, locked)
        except asyncio.CancelledError:
            _settle(batch, [Outcome.SINGLE] * len(batch))
            raise
        except Exception as err:  # noqa: BLE001 - every message then takes the single path
            log.info("batched send fell back to single sends", error=repr(err), size=len(batch))
            outcomes = [Outcome.SINGLE] * len(batch)
        finally:
            if not locked.done():
                locked.set_result(None)
        _settle(batch, outcomes)

    async def _commit(self, batch: list[_Pending], locked: asyncio.Future[None]) -> list[MessageRow | Outcome]:
        outcomes: list[MessageRow | Outcome] = [Outcome.NOT_INSERTED] * len(batch)
        async with self._pool.acquire() as conn, conn.transaction():
            sessions = await self._store.lock_sessions(conn, sorted({p.session_id for p in batch}))
            locked.set_result(None)
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
