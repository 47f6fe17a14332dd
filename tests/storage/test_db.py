"""The migration runner on empty databases: every migration applies, in order, once, even when several
processes start together (the advisory lock), and a second run is a no-op."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from storage.db import MIGRATION_LOCK_ID, load_migrations, migrate


async def recorded(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def test_migrations_apply_to_an_empty_database_and_twice_is_a_no_op(
    empty_database: Callable[[], str],
) -> None:
    dsn = empty_database()
    expected = [(m.version, m.name) for m in load_migrations()]
    assert [v for v, _ in expected] == sorted(v for v, _ in expected)

    assert await migrate(dsn) == [v for v, _ in expected]
    assert await recorded(dsn) == expected
    conn = await asyncpg.connect(dsn)
    try:
        # The last migrations' objects exist, so everything before them ran too.
        assert await conn.fetchval("SELECT to_regclass('messages_one_streaming_idx') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('personas_shared_search_idx') IS NOT NULL")
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages'"
            )
        }
        assert "lease_until" in columns
    finally:
        await conn.close()

    assert await migrate(dsn) == []
    assert await recorded(dsn) == expected


async def test_concurrent_migrations_apply_once_under_the_advisory_lock(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    versions = [m.version for m in load_migrations()]
    first, second = await asyncio.gather(migrate(dsn), migrate(dsn))
    # One runner applied everything; the other waited for the lock, then found nothing left to do.
    assert sorted([first, second]) == [[], versions]
    assert [v for v, _ in await recorded(dsn)] == versions

    conn = await asyncpg.connect(dsn)
    try:
        # The lock was released: another process could take it now.
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()


async def test_a_migration_waits_for_the_lock_holder(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        runner = asyncio.create_task(migrate(dsn))
        for _ in range(1000):  # until the runner's session waits on the advisory lock
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the migration did not wait for the advisory lock")
        assert not runner.done()
        # Nothing was created while the lock was held elsewhere.
        assert await holder.fetchval("SELECT to_regclass('schema_migrations')") is None
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        assert await runner == [m.version for m in load_migrations()]
    finally:
        await holder.close()
