"""ChatStore on PostgreSQL: the session row as the seq counter (gap-free under concurrency), client_id
dedupe, the group send (GROUP_SEND), the reply lease statements and the one-streaming-reply index."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import pytest

from storage.chat import ChatStore, NewUserMessage
from tests.storage.factories import make_chat, make_user, wait_until_blocked

store = ChatStore()


async def seqs(pool: asyncpg.Pool, session_id: uuid.UUID) -> list[int]:
    rows = await pool.fetch("SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", session_id)
    return [r["seq"] for r in rows]


async def last_seq(pool: asyncpg.Pool, session_id: uuid.UUID) -> int:
    return int(await pool.fetchval("SELECT last_seq FROM chat_sessions WHERE id = $1", session_id))


async def send(pool: asyncpg.Pool, session_id: uuid.UUID, user_id: uuid.UUID, content: str = "hi") -> int:
    """One user message in its own transaction; its seq."""
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.insert_user_message(
            conn, session_id=session_id, user_id=user_id, client_id=uuid.uuid4(), content=content, attachments=None
        )
    assert stored is not None
    return stored[0].seq


# --- seq numbering ---


async def test_concurrent_sends_get_gap_free_seqs(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)

    async def one(i: int) -> int:
        async with pool.acquire() as conn, conn.transaction():
            stored = await store.insert_user_message(
                conn, session_id=session.id, user_id=user.id, client_id=uuid.uuid4(), content=f"m{i}", attachments=[]
            )
            assert stored is not None
            message, persona_id = stored
            assert persona_id == session.persona_id
            await asyncio.sleep(0.005)  # hold the session row so the others queue behind it
            return message.seq

    got = await asyncio.gather(*(one(i) for i in range(40)))
    assert sorted(got) == list(range(1, 41))
    assert await seqs(pool, session.id) == list(range(1, 41))
    assert await last_seq(pool, session.id) == 40


async def test_lock_next_seq_interleaved_with_sends_stays_gap_free(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)

    async def reply(i: int) -> int:
        async with pool.acquire() as conn, conn.transaction():
            slot = await store.lock_next_seq(conn, session.id)
            assert slot is not None
            seq, persona_id, owner = slot
            assert (persona_id, owner) == (session.persona_id, user.id)
            await asyncio.sleep(0.005)
            message = await store.insert_message(
                conn, session_id=session.id, seq=seq, role="assistant", content=f"r{i}"
            )
            return message.seq

    got = await asyncio.gather(*(reply(i) if i % 2 else send(pool, session.id, user.id) for i in range(30)))
    assert sorted(got) == list(range(1, 31))
    assert await seqs(pool, session.id) == list(range(1, 31))
    assert await last_seq(pool, session.id) == 30


async def test_a_rolled_back_send_leaves_no_gap(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    assert await send(pool, session.id, user.id) == 1
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.insert_user_message(
                    conn, session_id=session.id, user_id=user.id, client_id=uuid.uuid4(), content="x", attachments=[]
                )
                raise RuntimeError("the caller failed after the insert")
    assert await send(pool, session.id, user.id) == 2
    assert await seqs(pool, session.id) == [1, 2]


async def test_lock_next_seq_of_a_missing_session(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await store.lock_next_seq(conn, uuid.uuid4()) is None


# --- the single send: ownership and client_id dedupe ---


async def test_send_to_someone_elses_session_stores_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        owner, other = await make_user(conn), await make_user(conn)
        session = await make_chat(conn, owner.id)
        stored = await store.insert_user_message(
            conn, session_id=session.id, user_id=other.id, client_id=uuid.uuid4(), content="x", attachments=[]
        )
        assert stored is None
        assert await store.owned_session(conn, session_id=session.id, user_id=other.id) is None
    assert await seqs(pool, session.id) == []
    assert await last_seq(pool, session.id) == 0


async def test_a_stored_client_id_is_not_stored_again_and_takes_no_seq(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
        client_id = uuid.uuid4()
        attachments = [{"file_id": str(uuid.uuid4()), "kind": "image"}]
        first = await store.insert_user_message(
            conn, session_id=session.id, user_id=user.id, client_id=client_id, content="first", attachments=attachments
        )
        assert first is not None and first[0].seq == 1 and first[0].attachments == attachments
        again = await store.insert_user_message(
            conn, session_id=session.id, user_id=user.id, client_id=client_id, content="retry", attachments=[]
        )
        assert again is None
        found = await store.message_by_client_id(conn, session_id=session.id, client_id=client_id)
        assert found == first[0]
    assert await last_seq(pool, session.id) == 1  # the retry did not bump the counter
    # The same client_id in another session is another message.
    async with pool.acquire() as conn:
        other = await make_chat(conn, user.id)
        elsewhere = await store.insert_user_message(
            conn, session_id=other.id, user_id=user.id, client_id=client_id, content="x", attachments=[]
        )
        assert elsewhere is not None and elsewhere[0].seq == 1


async def test_a_concurrent_duplicate_client_id_raises_and_rolls_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    client_id = uuid.uuid4()

    async def insert(conn: asyncpg.Connection) -> object:
        return await store.insert_user_message(
            conn, session_id=session.id, user_id=user.id, client_id=client_id, content="x", attachments=[]
        )

    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        assert await insert(first) is not None
        second_tx = second.transaction()
        await second_tx.start()
        racing = asyncio.create_task(insert(second))
        await wait_until_blocked(pool, second.get_server_pid())  # on the session row the first one holds
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await racing
        await second_tx.rollback()
    assert await seqs(pool, session.id) == [1]
    assert await last_seq(pool, session.id) == 1


async def test_paging_messages_after_and_before(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    for i in range(7):
        await send(pool, session.id, user.id, f"m{i + 1}")
    async with pool.acquire() as conn:
        after = await store.messages_after(conn, session_id=session.id, after_seq=2, limit=3)
        assert [m.seq for m in after] == [3, 4, 5]
        before = await store.messages_before(conn, session_id=session.id, before_seq=6, limit=3)
        assert [m.seq for m in before] == [3, 4, 5]  # the newest before 6, oldest first
        assert [m.content for m in before] == ["m3", "m4", "m5"]
        assert await store.messages_after(conn, session_id=session.id, after_seq=7, limit=10) == []


# --- GROUP_SEND ---


async def test_group_send_numbers_in_arrival_order_skips_stored_and_bumps_last_seq(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        me, other = await make_user(conn), await make_user(conn)
        a = await make_chat(conn, me.id, plain=True)
        b = await make_chat(conn, me.id, plain=True)
        theirs = await make_chat(conn, other.id, plain=True)
        with_persona = await make_chat(conn, me.id)
        stored_id = uuid.uuid4()
        assert await store.insert_user_message(
            conn, session_id=a.id, user_id=me.id, client_id=stored_id, content="stored", attachments=[]
        )
    twice, p = uuid.uuid4(), uuid.uuid4()
    ids = {name: uuid.uuid4() for name in ("a1", "b1", "a2", "b2", "x")}

    def row(session_id: uuid.UUID, client_id: uuid.UUID, content: str, user_id: uuid.UUID = me.id) -> NewUserMessage:
        return NewUserMessage(session_id=session_id, user_id=user_id, client_id=client_id, content=content)

    batch = [
        row(a.id, ids["a1"], "a1"),
        row(b.id, ids["b1"], "b1"),
        row(a.id, stored_id, "retry of a stored message"),
        row(a.id, ids["a2"], "a2"),
        row(theirs.id, ids["x"], "not my session"),
        row(with_persona.id, p, "to a persona"),
        row(b.id, ids["b2"], "b2"),
        row(a.id, twice, "first of two"),
        row(a.id, twice, "second of two"),
    ]
    async with pool.acquire() as conn, conn.transaction():
        stored, persona = await store.group_send(conn, batch)

    assert persona == {(with_persona.id, p)}
    expected = {(a.id, 2, "a1"), (a.id, 3, "a2"), (a.id, 4, "first of two"), (b.id, 1, "b1"), (b.id, 2, "b2")}
    assert len(stored) == len(expected)
    assert {(m.session_id, m.seq, m.content) for m in stored} == expected
    async with pool.acquire() as conn:
        # What group_send returned is what the database holds.
        for message in stored:
            assert await store.message(conn, message.id) == message
        in_a = await store.messages_after(conn, session_id=a.id, after_seq=0, limit=10)
        assert [(m.seq, m.content) for m in in_a] == [(1, "stored"), (2, "a1"), (3, "a2"), (4, "first of two")]
        assert await store.messages_after(conn, session_id=theirs.id, after_seq=0, limit=10) == []
        assert await store.messages_after(conn, session_id=with_persona.id, after_seq=0, limit=10) == []
    assert (await last_seq(pool, a.id), await last_seq(pool, b.id)) == (4, 2)
    assert (await last_seq(pool, theirs.id), await last_seq(pool, with_persona.id)) == (0, 0)

    # The same batch again stores nothing: every client_id is taken now.
    async with pool.acquire() as conn, conn.transaction():
        again, persona = await store.group_send(conn, batch)
    assert again == [] and persona == {(with_persona.id, p)}
    assert (await last_seq(pool, a.id), await last_seq(pool, b.id)) == (4, 2)


async def test_concurrent_group_sends_and_single_sends_never_deadlock_and_stay_gap_free(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        sessions = [await make_chat(conn, user.id, plain=True) for _ in range(4)]
    rng = random.Random(12)

    async def batch() -> int:
        rows = [
            NewUserMessage(session_id=s.id, user_id=user.id, client_id=uuid.uuid4(), content="b")
            for s in rng.sample(sessions, len(sessions))  # each batch names the sessions in its own order
            for _ in range(3)
        ]
        async with pool.acquire() as conn, conn.transaction():
            stored, _ = await store.group_send(conn, rows)
            await asyncio.sleep(0.005)
        return len(stored)

    jobs = [batch() if i % 3 else send(pool, sessions[i % 4].id, user.id) for i in range(24)]
    results = await asyncio.gather(*jobs)  # a deadlock would raise DeadlockDetectedError here
    batches = sum(1 for i in range(24) if i % 3)
    assert sum(r for i, r in enumerate(results) if i % 3) == batches * 12
    total = 0
    for s in sessions:
        got = await seqs(pool, s.id)
        assert got == list(range(1, len(got) + 1))
        assert await last_seq(pool, s.id) == len(got)
        total += len(got)
    assert total == batches * 12 + (24 - batches)


async def test_group_send_meeting_a_concurrent_duplicate_fails_whole(pool: asyncpg.Pool) -> None:
    """A client_id committed by another transaction while the batch waited for the session lock slips past
    NOT EXISTS and hits the unique index: the statement fails and nothing of the batch is stored."""
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id, plain=True)
    dup, fresh = uuid.uuid4(), uuid.uuid4()
    rows = [
        NewUserMessage(session_id=session.id, user_id=user.id, client_id=fresh, content="fresh"),
        NewUserMessage(session_id=session.id, user_id=user.id, client_id=dup, content="dup"),
    ]
    async with pool.acquire() as single, pool.acquire() as grouped:
        tx = single.transaction()
        await tx.start()
        assert await store.insert_user_message(
            single, session_id=session.id, user_id=user.id, client_id=dup, content="single", attachments=[]
        )
        group_tx = grouped.transaction()
        await group_tx.start()
        racing = asyncio.create_task(store.group_send(grouped, rows))
        await wait_until_blocked(pool, grouped.get_server_pid())
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await racing
        await group_tx.rollback()
    async with pool.acquire() as conn:
        assert [m.content for m in await store.messages_after(conn, session_id=session.id, after_seq=0, limit=9)] == [
            "single"
        ]
        assert await store.message_by_client_id(conn, session_id=session.id, client_id=fresh) is None
    assert await last_seq(pool, session.id) == 1


# --- AI replies: the streaming row, its lease, and ending orphans ---


async def start_reply(
    pool: asyncpg.Pool, session_id: uuid.UUID, *, lease: float = 30.0, reply_to: uuid.UUID | None = None
) -> uuid.UUID:
    """What ReplyService.kick does: the next seq, the streaming assistant row, its lease; one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        slot = await store.lock_next_seq(conn, session_id)
        assert slot is not None
        reply = await store.insert_message(
            conn,
            session_id=session_id,
            seq=slot[0],
            role="assistant",
            content="",
            status="streaming",
            reply_to=reply_to,
        )
        await store.claim_lease(conn, reply.id, seconds=lease)
    return reply.id


async def test_a_held_lease_is_live_and_cannot_be_ended_as_an_orphan(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    await send(pool, session.id, user.id)
    reply_id = await start_reply(pool, session.id)
    async with pool.acquire() as conn:
        assert await store.streaming_reply(conn, session.id) == (reply_id, False)
        owner = await store.reply_owner(conn, reply_id)
        assert owner is not None
        assert (owner.session_id, owner.user_id, owner.status, owner.expired) == (
            session.id,
            user.id,
            "streaming",
            False,
        )
        assert owner.live
        assert await store.live_replies(conn, session.id) == {reply_id}
        assert reply_id not in await store.expired_replies(conn, limit=1000)
        assert await store.end_orphan(conn, reply_id, content="", status="failed") is None
        message = await store.message(conn, reply_id)
        assert message is not None and message.status == "streaming"


async def test_an_expired_lease_is_reaped_by_exactly_one_process(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    await send(pool, session.id, user.id)
    reply_id = await start_reply(pool, session.id, lease=-1)  # its owner stopped renewing a second ago
    async with pool.acquire() as conn:
        assert await store.streaming_reply(conn, session.id) == (reply_id, True)
        owner = await store.reply_owner(conn, reply_id)
        assert owner is not None and owner.expired is True and not owner.live
        assert await store.live_replies(conn, session.id) == set()
        assert reply_id in await store.expired_replies(conn, limit=1000)

    async def reap(text: str) -> object:
        async with pool.acquire() as conn, conn.transaction():
            ended = await store.end_orphan(conn, reply_id, content=text, status="stopped")
            await asyncio.sleep(0.01)  # hold the row: the other reaper waits, then finds it ended
            return ended

    results = await asyncio.gather(*(reap(f"text {i}") for i in range(4)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    async with pool.acquire() as conn:
        message = await store.message(conn, reply_id)
        assert message == winners[0]
        assert message is not None and message.status == "stopped" and message.content.startswith("text ")
        assert reply_id not in await store.expired_replies(conn, limit=1000)
        assert await store.streaming_reply(conn, session.id) is None
        owner = await store.reply_owner(conn, reply_id)
        assert owner is not None and owner.status == "stopped" and not owner.live


async def test_renew_leases_extends_the_streaming_ones_and_reports_the_ended(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        s1, s2, s3 = [await make_chat(conn, user.id) for _ in range(3)]
    running = await start_reply(pool, s1.id, lease=-1)  # lagging renewal: expired but still ours
    finished = await start_reply(pool, s2.id)
    orphaned = await start_reply(pool, s3.id, lease=-1)
    async with pool.acquire() as conn:
        assert await store.finish_reply(conn, finished, content="done", status="complete", usage={"total_tokens": 3})
        assert await store.end_orphan(conn, orphaned, content="", status="failed")
        held = await store.renew_leases(conn, [running, finished, orphaned], seconds=60)
        assert held == {running}
        assert await store.streaming_reply(conn, s1.id) == (running, False)
        assert await store.live_replies(conn, s1.id) == {running}
        lease = await conn.fetchval("SELECT lease_until - now() FROM messages WHERE id = $1", running)
        assert lease.total_seconds() == pytest.approx(60, abs=1)
        assert await store.renew_leases(conn, [], seconds=60) == set()


async def test_expired_replies_oldest_lease_first_and_limited(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        sessions = [await make_chat(conn, user.id) for _ in range(3)]
    # Leases that ran out far in the past, so they sort before any other test's expired rows.
    ids = [await start_reply(pool, s.id, lease=-86_400 * (10 - i)) for i, s in enumerate(sessions)]
    async with pool.acquire() as conn:
        assert await store.expired_replies(conn, limit=2) == ids[:2]


async def test_one_streaming_reply_per_session(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session, other = await make_chat(conn, user.id), await make_chat(conn, user.id)
    first = await start_reply(pool, session.id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await start_reply(pool, session.id)
    await start_reply(pool, other.id)  # another session streams at the same time
    async with pool.acquire() as conn:
        done = await store.finish_reply(conn, first, content="answer", status="complete", usage=None)
        assert done is not None and done.status == "complete"
        assert await store.finish_reply(conn, first, content="again", status="stopped", usage=None) is None
        message = await store.message(conn, first)
        assert message is not None and message.content == "answer"
    second = await start_reply(pool, session.id)  # a finished reply frees the slot
    assert second != first
    assert await seqs(pool, session.id) == [1, 2]  # the refused insert rolled its seq back: no gap


async def test_concurrent_claims_let_one_reply_stream(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)

    async def claim() -> uuid.UUID | None:
        try:
            return await start_reply(pool, session.id)
        except asyncpg.UniqueViolationError:
            return None

    claimed = [r for r in await asyncio.gather(*(claim() for _ in range(6))) if r is not None]
    assert len(claimed) == 1
    async with pool.acquire() as conn:
        assert await store.live_replies(conn, session.id) == set(claimed)
    assert await seqs(pool, session.id) == [1]


async def test_unanswered_recent_and_first_reply_after(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        session = await make_chat(conn, user.id)
    await send(pool, session.id, user.id, "q1")  # 1
    answered = await start_reply(pool, session.id)  # 2
    await send(pool, session.id, user.id, "q2")  # 3
    async with pool.acquire() as conn:
        # A streaming reply has answered nothing yet.
        assert [m.content for m in await store.unanswered(conn, session.id)] == ["q1", "q2"]
        await store.finish_reply(conn, answered, content="a1", status="complete", usage=None)
        assert [m.content for m in await store.unanswered(conn, session.id)] == ["q2"]
    failed = await start_reply(pool, session.id)  # 4
    await send(pool, session.id, user.id, "q3")  # 5
    async with pool.acquire() as conn:
        await store.finish_reply(conn, failed, content="", status="failed", usage=None)
        # A failed reply answered nothing either.
        assert [m.content for m in await store.unanswered(conn, session.id)] == ["q2", "q3"]
        recent = await store.recent(conn, session.id, before_seq=5, limit=3)
        assert [m.seq for m in recent] == [2, 3, 4]
        after = await store.first_reply_after(conn, session.id, 2)
        assert after is not None and after.id == failed
        assert await store.first_reply_after(conn, session.id, 4) is None
        question = (await store.messages_after(conn, session_id=session.id, after_seq=0, limit=1))[0]
        assert await store.reply_owner(conn, question.id) is None  # a user message is no reply
