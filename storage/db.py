"""The asyncpg pool and the numbered-SQL migration runner."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from storage.job_queue import apply_queue_schema

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; every Parlor process uses the same one so only one migrates at a time.
MIGRATION_LOCK_ID = 0x7061726C6F72  # "parlor"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Errors that mean "the database is not reachable right now" rather than "your query is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    # What a connection the server killed while idle raises on its next use.
    asyncpg.exceptions.InternalClientError,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migrations share a number")
    return found


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions this call applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
                log.info("migration applied", version=migration.version, name=migration.name)
            queue = await apply_queue_schema(conn)
            if queue is not None:
                log.info("job queue schema applied", what=queue)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
    return applied


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo. Pooled connections never LISTEN, SET, hold advisory locks or open
    cursors outside a transaction (migrations use their own connection), and asyncpg still rolls back
    an open transaction itself. Skipping its default reset query saves a round trip per acquire."""


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session, command_timeout=30
    )
    assert pool is not None
    return pool
