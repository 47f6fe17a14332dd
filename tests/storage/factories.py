"""Rows the storage tests build on, made through the stores themselves, and waiting for a lock."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from core.entities import ChatSession, Persona, PersonaDraft
from storage.chat import ChatStore
from storage.personas import PersonaStore
from storage.users import UserRow, UserStore

users, personas, chats = UserStore(), PersonaStore(), ChatStore()


def word(tag: str) -> str:
    """A word no other test's rows contain (letters only, so the text search parser keeps it one word)."""
    return tag + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


async def make_user(conn: asyncpg.Connection, *, email: str | None = None) -> UserRow:
    row = await users.insert(
        conn, email=email or f"{word('u')}@example.com", password_hash="x", display_name="Tester", role="user"
    )
    assert row is not None
    return row


async def make_persona(
    conn: asyncpg.Connection, owner_id: uuid.UUID, *, visibility: str = "private", **fields: Any
) -> Persona:
    fields.setdefault("name", word("persona"))
    return await personas.insert(conn, owner_id=owner_id, draft=PersonaDraft(visibility=visibility, **fields))


async def make_chat(conn: asyncpg.Connection, user_id: uuid.UUID, *, plain: bool = False) -> ChatSession:
    """A chat session with the user's own persona; `plain`: its persona deleted (no replies, group-committed)."""
    persona = await make_persona(conn, user_id)
    session = await chats.create_session(conn, user_id=user_id, persona_id=persona.id, title=None)
    assert session is not None
    if plain:
        assert await personas.delete(conn, persona.id, owner_id=user_id)
        session = await chats.owned_session(conn, session_id=session.id, user_id=user_id)
        assert session is not None and session.persona_id is None
    return session


async def wait_until_blocked(pool: asyncpg.Pool, pid: int) -> None:
    """Returns once backend `pid` waits for a lock (so the test knows the order the statements ran in)."""
    for _ in range(1000):
        waiting = await pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")
