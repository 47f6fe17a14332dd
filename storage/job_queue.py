"""The job queue's tables in PostgreSQL (procrastinate's schema) as asyncpg sees them: the schema applied
beside Parlor's migrations, and the two writes Parlor makes inside its own transactions — putting a job
on the queue and cancelling one — so that a job row and its queue entry are committed together.

The one reach into procrastinate's SQL API: `procrastinate_defer_jobs_v1` and `procrastinate_cancel_job_v1`
are versioned functions of its schema (checked with 3.10.0), the same ones its own job manager calls.
A test (tests/storage/test_job_queue.py) defers through them and runs the job with procrastinate's worker."""

from __future__ import annotations

import re
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from procrastinate.schema import SchemaManager

log = structlog.get_logger(__name__)

# Parlor's queue: every Parlor task runs in it.
QUEUE = "parlor"
_MIGRATION = re.compile(r"^(\d{2})\.(\d{2})\.(\d{2})_(\d{2})_.+\.sql$")

DEFER = """
SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[
    ROW($1::varchar, $2::varchar, $3::integer, $4::text, NULL::text, $5::jsonb, $6::timestamptz)
]::procrastinate_job_to_defer_v1[]))
"""
# abort=true: a queued job is cancelled at once; a running one is asked to abort (its worker is notified).
CANCEL = "SELECT procrastinate_cancel_job_v1($1, true, false)"
STATUS = "SELECT status::text FROM procrastinate_jobs WHERE id = $1"
RECORDED_VERSION = "SELECT version FROM queue_schema"


def _version_tuple(version: str) -> tuple[int, int, int]:
    parts = [*version.split("."), "0", "0"][:3]
    return int(parts[0]), int(parts[1]), int(re.sub(r"\D.*$", "", parts[2]) or 0)


def _upgrades(since: tuple[int, int, int], until: tuple[int, int, int]) -> list[Path]:
    """procrastinate's migration files after `since` up to `until`, in order."""
    found: list[tuple[tuple[int, int, int, int], Path]] = []
    for path in Path(SchemaManager.get_migrations_path()).glob("*.sql"):
        match = _MIGRATION.match(path.name)
        if match is None:
            continue
        version = (int(match[1]), int(match[2]), int(match[3]))
        if since < version <= until:
            found.append(((*version, int(match[4])), path))
    return [path for _, path in sorted(found)]


async def apply_queue_schema(conn: asyncpg.Connection) -> str | None:
    """procrastinate's schema, once per database (its own apply is not idempotent), or its migrations since
    the version recorded. Runs inside the migration lock (storage.db.migrate). Returns what it did."""
    installed = metadata.version("procrastinate")
    await conn.execute("CREATE TABLE IF NOT EXISTS queue_schema (version text NOT NULL)")
    recorded = await conn.fetchval(RECORDED_VERSION)
    if recorded == installed:
        return None
    async with conn.transaction():
        if recorded is None:
            await conn.execute(SchemaManager.get_schema())
            await conn.execute("INSERT INTO queue_schema (version) VALUES ($1)", installed)
            return f"procrastinate {installed} schema"
        for path in _upgrades(_version_tuple(recorded), _version_tuple(installed)):
            await conn.execute(path.read_text(encoding="utf-8"))
        await conn.execute("UPDATE queue_schema SET version = $1", installed)
    return f"procrastinate {recorded} -> {installed}"


class JobQueue:
    async def defer(
        self,
        conn: asyncpg.Connection,
        *,
        task: str,
        args: dict[str, Any],
        priority: int = 0,
        lock: str | None = None,
        scheduled_at: datetime | None = None,
    ) -> int:
        """Put one job on the queue in the caller's transaction; a worker sees it after the commit (the
        insert notifies the queue's channel). Returns the queue job id."""
        return int(await conn.fetchval(DEFER, QUEUE, task, priority, lock, args, scheduled_at))

    async def cancel(self, conn: asyncpg.Connection, queue_job_id: int) -> str | None:
        """Cancel a queued job, or ask a running one to abort. The queue entry's status afterwards
        ('cancelled', 'doing', ...), None when there is no entry."""
        await conn.fetchval(CANCEL, queue_job_id)
        status = await conn.fetchval(STATUS, queue_job_id)
        return str(status) if status is not None else None
