"""Group commit of user messages (issue 6): one transaction for every send waiting at the same moment,
with the guarantees of a send on its own: gap-free ordered seqs, one row per client_id, other users'
sessions untouched, persona messages and failed batches left to the single send."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.entities import Message
from server.config import Settings
from services.message_writer import MessageWriter, Outcome
from storage.db import create_pool
from tests.helpers import bearer, make_chat, make_plain_chat, register


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def plain_chat(client: TestClient, user: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID((await make_plain_chat(client, user))["id"])


def uid(user: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(user["user"]["id"])


async def seqs(pool: asyncpg.Pool, session_id: uuid.UUID) -> list[int]:
    rows = await pool.fetch("SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", session_id)
    return [r["seq"] for r in rows]


async def test_concurrent_sends_share_transactions_and_keep_seqs_gap_free(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    users = [await register(client) for _ in range(5)]
    chats = [await plain_chat(client, u) for u in users]
    writer = MessageWriter(pool)
    calls = [
        writer.write(user_id=uid(u), session_id=c, client_id=uuid.uuid4(), content=f"m{i}")
        for i in range(40)
        for u, c in zip(users, chats, strict=True)
    ]
    results = await asyncio.gather(*calls)
    assert all(isinstance(r, Message) for r in results)
    assert writer.batches < len(calls) / 4, writer.batches  # 200 messages in a few transactions
    for c in chats:
        assert await seqs(pool, c) == list(range(1, 41))
    # Within a session, seqs follow the order the sends arrived in.
    mine = [r for r in results if isinstance(r, Message) and r.session_id == chats[0]]
    assert [m.content for m in sorted(mine, key=lambda m: m.seq)] == [f"m{i}" for i in range(40)]
    row = await pool.fetchrow("SELECT last_seq FROM chat_sessions WHERE id = $1", chats[0])
    assert row["last_seq"] == 40


async def test_duplicates_other_users_and_persona_sessions(client: TestClient, pool: asyncpg.Pool) -> None:
    me, other = await register(client), await register(client)
    mine, theirs = await plain_chat(client, me), await plain_chat(client, other)
    with_persona = uuid.UUID((await make_chat(client, me))["id"])
    writer = MessageWriter(pool)
    stored_id = uuid.uuid4()
    first = await writer.write(user_id=uid(me), session_id=mine, client_id=stored_id, content="stored")
    assert isinstance(first, Message) and first.seq == 1

    twice = uuid.uuid4()
    results = await asyncio.gather(
        writer.write(user_id=uid(me), session_id=mine, client_id=stored_id, content="retry"),
        writer.write(user_id=uid(me), session_id=mine, client_id=twice, content="a"),
        writer.write(user_id=uid(me), session_id=mine, client_id=twice, content="a again"),
        writer.write(user_id=uid(me), session_id=theirs, client_id=uuid.uuid4(), content="not mine"),
        writer.write(user_id=uid(me), session_id=uuid.uuid4(), client_id=uuid.uuid4(), content="no such chat"),
        writer.write(user_id=uid(me), session_id=with_persona, client_id=uuid.uuid4(), content="to a persona"),
    )
    assert results[0] is Outcome.NOT_INSERTED
    assert isinstance(results[1], Message) and results[1].seq == 2
    assert results[2] is Outcome.NOT_INSERTED  # the same client_id twice in one batch: stored once
    assert results[3] is Outcome.NOT_INSERTED and results[4] is Outcome.NOT_INSERTED
    assert results[5] is Outcome.SINGLE
    assert await seqs(pool, mine) == [1, 2]
    assert await seqs(pool, theirs) == [] and await seqs(pool, with_persona) == []


async def test_a_failed_batch_hands_every_message_to_the_single_send(client: TestClient, pool: asyncpg.Pool) -> None:
    user = await register(client)
    chat = await plain_chat(client, user)
    writer = MessageWriter(pool)
    # PostgreSQL refuses NUL in text (the API refuses it before): the whole batch rolls back.
    results = await asyncio.gather(
        writer.write(user_id=uid(user), session_id=chat, client_id=uuid.uuid4(), content="fine"),
        writer.write(user_id=uid(user), session_id=chat, client_id=uuid.uuid4(), content="bad\x00"),
    )
    assert results == [Outcome.SINGLE, Outcome.SINGLE]
    assert await seqs(pool, chat) == []
    row = await pool.fetchrow("SELECT last_seq FROM chat_sessions WHERE id = $1", chat)
    assert row["last_seq"] == 0
    after = await writer.write(user_id=uid(user), session_id=chat, client_id=uuid.uuid4(), content="next")
    assert isinstance(after, Message) and after.seq == 1


async def test_two_writers_racing_on_one_client_id_store_it_once(
    client: TestClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    """Two processes (two writers, two pools) retrying the same message at once."""
    user = await register(client)
    chat = await plain_chat(client, user)
    other_pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        writers = [MessageWriter(pool), MessageWriter(other_pool)]
        for round_ in range(10):
            client_id = uuid.uuid4()
            results = await asyncio.gather(
                *(
                    w.write(user_id=uid(user), session_id=chat, client_id=client_id, content=f"r{round_}")
                    for w in writers
                )
            )
            assert sum(isinstance(r, Message) for r in results) <= 1
            count = await pool.fetchval("SELECT count(*) FROM messages WHERE client_id = $1", client_id)
            if not any(isinstance(r, Message) for r in results):
                # The loser hit the unique index and rolled back: the single send stores it.
                assert Outcome.SINGLE in results and count == 0
            else:
                assert count == 1
    finally:
        await other_pool.close()
    got = await seqs(pool, chat)
    assert got == list(range(1, len(got) + 1))


async def test_rest_and_socket_sends_in_a_plain_session_use_the_batch(client: TestClient) -> None:
    user = await register(client)
    chat = await plain_chat(client, user)
    url = f"/api/v1/chat/sessions/{chat}/messages"
    client_id = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(client.post(url, json={"client_id": client_id, "content": "once"}, headers=bearer(user)) for _ in range(5)),
        *(
            client.post(url, json={"client_id": str(uuid.uuid4()), "content": f"n{i}"}, headers=bearer(user))
            for i in range(20)
        ),
    )
    statuses = [a.status for a in answers]
    assert sorted(statuses[:5]) == [200, 200, 200, 200, 201] and set(statuses[5:]) == {201}
    bodies = [await a.json() for a in answers]
    assert len({b["id"] for b in bodies[:5]}) == 1
    assert sorted({b["seq"] for b in bodies}) == list(range(1, 22))
    history = await (await client.get(f"{url}?limit=100", headers=bearer(user))).json()
    assert [m["seq"] for m in history["items"]] == list(range(1, 22))
    other = await register(client)
    stranger = await client.post(url, json={"client_id": str(uuid.uuid4()), "content": "x"}, headers=bearer(other))
    assert stranger.status == 404
