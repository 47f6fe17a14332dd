"""PersonaStore on PostgreSQL: full-text search over the generated vectors (the owner's `search`, everyone
else's `shared_search`, which leaves out a definition that is not remixable), ranking, and trending."""

from __future__ import annotations

import uuid

import asyncpg

from storage.personas import PersonaStore
from tests.storage.factories import make_persona, make_user, word

store = PersonaStore()


async def found(conn: asyncpg.Connection, viewer: uuid.UUID, query: str) -> list[uuid.UUID]:
    return [s.persona.id for s in await store.search(conn, viewer_id=viewer, query=query, offset=0, limit=50)]


async def test_the_owner_searches_everything_of_theirs_others_only_the_shared_part(pool: asyncpg.Pool) -> None:
    hidden, shown, secret, about, tag = word("hidden"), word("shown"), word("secret"), word("about"), word("tag")
    async with pool.acquire() as conn:
        owner, other = await make_user(conn), await make_user(conn)
        private = await make_persona(conn, owner.id, personality=secret, description=about)
        closed = await make_persona(conn, owner.id, visibility="public", personality=hidden, description=about)
        open_ = await make_persona(conn, owner.id, visibility="public", remixable=True, personality=shown, tags=[tag])

        # The owner finds their own personas by any field, private ones included.
        assert await found(conn, owner.id, secret) == [private.id]
        assert await found(conn, owner.id, hidden) == [closed.id]
        assert set(await found(conn, owner.id, about)) == {private.id, closed.id}
        # Others: never a private persona; a public one's personality only when remixable.
        assert await found(conn, other.id, secret) == []
        assert await found(conn, other.id, hidden) == []
        assert await found(conn, other.id, about) == [closed.id]
        assert await found(conn, other.id, shown) == [open_.id]
        assert await found(conn, other.id, tag) == [open_.id]
        assert await found(conn, other.id, private.name) == []
        assert await found(conn, other.id, closed.name) == [closed.id]

        # The generated columns follow updates.
        assert await store.update(conn, closed.id, owner_id=owner.id, remixable=True)
        assert await found(conn, other.id, hidden) == [closed.id]
        assert await store.update(conn, closed.id, owner_id=owner.id, visibility="private")
        assert await found(conn, other.id, hidden) == []
        assert await found(conn, owner.id, hidden) == [closed.id]
        # Only the owner may update.
        assert await store.update(conn, open_.id, owner_id=other.id, visibility="private") is None
        assert await found(conn, other.id, shown) == [open_.id]


async def test_ranking_weights_and_paging(pool: asyncpg.Pool) -> None:
    term = word("rank")
    async with pool.acquire() as conn:
        owner, viewer = await make_user(conn), await make_user(conn)
        by_personality = await make_persona(
            conn, owner.id, visibility="public", remixable=True, personality=f"likes {term}"
        )
        by_description = await make_persona(conn, owner.id, visibility="public", description=f"a {term} fan")
        by_name = await make_persona(conn, owner.id, visibility="public", name=f"{term} the great")

        results = await store.search(conn, viewer_id=viewer.id, query=term, offset=0, limit=10)
        assert [s.persona.id for s in results] == [by_name.id, by_description.id, by_personality.id]
        assert results[0].score > results[1].score > results[2].score > 0
        page = await store.search(conn, viewer_id=viewer.id, query=term, offset=1, limit=1)
        assert [s.persona.id for s in page] == [by_description.id]
        # A query of stop words only, or of nothing, matches nothing.
        assert await found(conn, viewer.id, "the and of") == []
        assert await found(conn, viewer.id, "") == []
        # Web search syntax: a quoted phrase, an excluded word.
        assert await found(conn, viewer.id, f'"{term} the great"') == [by_name.id]
        assert set(await found(conn, viewer.id, f"{term} -fan")) == {by_name.id, by_personality.id}


async def test_crud_and_keyset_listing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        owner, other = await make_user(conn), await make_user(conn)
        made = [await make_persona(conn, owner.id, tags=["a", "b"]) for _ in range(3)]
        assert await store.count_owned(conn, owner.id) == 3
        first = await store.list_owned(conn, owner.id, before=None, limit=2)
        rest = await store.list_owned(conn, owner.id, before=(first[-1].created_at, first[-1].id), limit=2)
        assert [p.id for p in first + rest] == [
            p.id for p in sorted(made, key=lambda p: (p.created_at, p.id), reverse=True)
        ]
        assert (await store.get(conn, made[0].id)) == made[0]
        assert made[0].tags == ["a", "b"]
        assert not await store.delete(conn, made[0].id, owner_id=other.id)
        assert await store.delete(conn, made[0].id, owner_id=owner.id)
        assert await store.get(conn, made[0].id) is None


async def test_trending_ranks_recent_activity_then_quiet_public_personas(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        owner = await make_user(conn)
        quiet = await make_persona(conn, owner.id, visibility="public")
        busy = await make_persona(conn, owner.id, visibility="public")
        busier = await make_persona(conn, owner.id, visibility="public")
        private = await make_persona(conn, owner.id)
        await store.record_activity(conn, busy.id, chats=1)
        await store.record_activity(conn, busier.id, messages=2)
        await store.record_activity(conn, busier.id, chats=1, messages=1)  # adds to today's row
        await store.record_activity(conn, private.id, chats=100)
        await store.record_activity(conn, uuid.uuid4(), chats=1)  # a deleted persona: skipped, no error
        assert await conn.fetchval(
            "SELECT (chats, messages) = (1, 3) FROM persona_activity WHERE persona_id = $1", busier.id
        )
        ranked = await store.trending(conn, offset=0, limit=1000)
        ids = [s.persona.id for s in ranked]
        assert ids[:2] == [busier.id, busy.id]
        assert [s.score for s in ranked[:2]] == [6.0, 3.0]
        assert quiet.id in ids and private.id not in ids
        assert ranked[ids.index(quiet.id)].score == 0
