"""KnowledgeStore on PostgreSQL: chunks ranked against the words of a message (any word may match, stop
words dropped), the copy of a knowledge base with its chunks, and the lock that holds off a persona delete."""

from __future__ import annotations

import asyncio

import asyncpg

from storage.knowledge import KnowledgeStore
from storage.personas import PersonaStore
from tests.storage.factories import make_persona, make_user, wait_until_blocked, word

store = KnowledgeStore()


async def test_relevant_chunks_and_the_copy(pool: asyncpg.Pool) -> None:
    dragon, castle = word("dragon"), word("castle")
    async with pool.acquire() as conn:
        owner = await make_user(conn)
        persona = await make_persona(conn, owner.id)
        other = await make_persona(conn, owner.id)
        async with conn.transaction():
            entry = await store.insert(
                conn,
                persona_id=persona.id,
                title="lore",
                source="text",
                content="whole text",
                chunks=[f"the {dragon} sleeps", f"the {dragon} guards the {castle}", "nothing here"],
            )
        assert (entry.chars, entry.chunks) == (len("whole text"), 3)
        matches = await store.relevant(conn, persona.id, words=["the", castle, dragon], limit=5)
        # Both words in one chunk rank first; "the" alone is a stop word and matches nothing.
        assert [m.content for m in matches] == [f"the {dragon} guards the {castle}", f"the {dragon} sleeps"]
        assert matches[0].rank > matches[1].rank
        assert await store.relevant(conn, persona.id, words=["the", "and"], limit=5) == []
        assert await store.relevant(conn, other.id, words=[dragon], limit=5) == []  # another persona's base

        async with conn.transaction():
            assert await store.copy(conn, source_persona_id=persona.id, target_persona_id=other.id) == 1
        copied = await store.documents(conn, other.id)
        assert [(d.entry.title, d.content) for d in copied] == [("lore", "whole text")]
        assert copied[0].entry.id != entry.id and copied[0].entry.created_at == entry.created_at
        assert len(await store.relevant(conn, other.id, words=[dragon], limit=5)) == 2
        # Deleting the source entry leaves the copy's chunks alone.
        assert await store.delete(conn, entry.id, persona_id=persona.id)
        assert await store.relevant(conn, persona.id, words=[dragon], limit=5) == []
        assert len(await store.relevant(conn, other.id, words=[dragon], limit=5)) == 2


async def test_locking_an_owned_persona_holds_off_its_delete(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        owner, other = await make_user(conn), await make_user(conn)
        persona = await make_persona(conn, owner.id)
        assert await store.owns_persona(conn, persona.id, owner_id=owner.id)
        assert not await store.owns_persona(conn, persona.id, owner_id=other.id)
    async with pool.acquire() as adder, pool.acquire() as deleter:
        tx = adder.transaction()
        await tx.start()
        assert not await store.lock_owned_persona(adder, persona.id, owner_id=other.id)
        assert await store.lock_owned_persona(adder, persona.id, owner_id=owner.id)
        deleting = asyncio.create_task(PersonaStore().delete(deleter, persona.id, owner_id=owner.id))
        await wait_until_blocked(pool, deleter.get_server_pid())
        await store.insert(adder, persona_id=persona.id, title="t", source="text", content="c", chunks=["c"])
        await tx.commit()
        assert await deleting  # then the delete goes ahead, and takes the new entry with it
    async with pool.acquire() as conn:
        assert await store.count(conn, persona.id) == 0
