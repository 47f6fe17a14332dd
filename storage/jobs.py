"""JobStore: the `jobs` table (what owners see of their background jobs). Methods take the caller's
connection; rows in, `core.entities.Job` out. Every state change is one conditional UPDATE, so a cancel and
a worker racing on one job end in one consistent state."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import Job

_COLUMNS = (
    "id, user_id, kind, status, progress, step, attempts, max_attempts, priority, params, result, error, runs,"
    " queue_job_id, result_file_id, result_expires_at, cancel_requested, created_at, updated_at, finished_at"
)
# The newest run closed: its end, its error and, for a retry, when the next one is due. A job cancelled
# before it ever ran has no run to close.
_CLOSE_RUN = """runs = CASE WHEN jsonb_array_length(runs) > 0 AND runs -> -1 ->> 'finished_at' IS NULL
    THEN jsonb_set(runs, ARRAY[(jsonb_array_length(runs) - 1)::text], (runs -> -1) || jsonb_build_object(
        'finished_at', clock_timestamp(), 'error', {error}::text, 'retry_at', {retry_at}::timestamptz))
    ELSE runs END"""

# Jobs in flight are counted under a per-user lock, so concurrent creates cannot pass the limit.
LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended('parlor-jobs:' || $1::uuid::text, 0))"
IN_FLIGHT = "SELECT count(*) FROM jobs WHERE user_id = $1 AND status IN ('queued', 'running')"
INSERT = f"""
INSERT INTO jobs (user_id, kind, max_attempts, priority, params, step) VALUES ($1, $2, $3, $4, $5::jsonb, 'queued')
RETURNING {_COLUMNS}
"""
SET_QUEUE_JOB = f"UPDATE jobs SET queue_job_id = $2 WHERE id = $1 RETURNING {_COLUMNS}"
GET = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"
GET_OWNED = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2"
LOCK_OWNED = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2 FOR UPDATE"
PAGE = f"""
SELECT {_COLUMNS} FROM jobs
WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC LIMIT $5
"""
# A queued job starts unless a cancel came first.
START = f"""
UPDATE jobs SET status = 'running', attempts = attempts + 1, step = 'started', error = NULL,
    updated_at = clock_timestamp(),
    runs = runs || jsonb_build_array(jsonb_build_object('attempt', attempts + 1, 'started_at', clock_timestamp()))
WHERE id = $1 AND status = 'queued' AND NOT cancel_requested
RETURNING {_COLUMNS}
"""
# Progress never goes back; the answer tells the run whether a cancel is waiting for it.
PROGRESS = f"""
UPDATE jobs SET progress = GREATEST(progress, $2), step = COALESCE($3, step), updated_at = clock_timestamp()
WHERE id = $1 AND status = 'running'
RETURNING {_COLUMNS}
"""
SUCCEED = f"""
UPDATE jobs SET status = 'succeeded', progress = 1, step = 'done', result = $2::jsonb, result_file_id = $3,
    result_expires_at = $4, finished_at = clock_timestamp(), updated_at = clock_timestamp(),
    {_CLOSE_RUN.format(error="NULL", retry_at="NULL")}
WHERE id = $1 AND status = 'running'
RETURNING {_COLUMNS}
"""
RETRY = f"""
UPDATE jobs SET status = 'queued', error = $2, step = $3, updated_at = clock_timestamp(),
    {_CLOSE_RUN.format(error="$2", retry_at="$4")}
WHERE id = $1 AND status = 'running'
RETURNING {_COLUMNS}
"""
FAIL = f"""
UPDATE jobs SET status = 'failed', error = $2, step = 'failed', finished_at = clock_timestamp(),
    updated_at = clock_timestamp(), {_CLOSE_RUN.format(error="$2", retry_at="NULL")}
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING {_COLUMNS}
"""
CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', step = 'cancelled', finished_at = clock_timestamp(),
    updated_at = clock_timestamp(), {_CLOSE_RUN.format(error="'cancelled'", retry_at="NULL")}
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING {_COLUMNS}
"""
REQUEST_CANCEL = f"""
UPDATE jobs SET cancel_requested = true, updated_at = clock_timestamp()
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING {_COLUMNS}
"""
EXPIRING = """
SELECT id, user_id, result_file_id FROM jobs WHERE result_expires_at <= $1 ORDER BY result_expires_at LIMIT $2
"""
# The link and the file go; the rest of the result stays, marked expired.
EXPIRE = f"""
UPDATE jobs SET result = (COALESCE(result, '{{}}'::jsonb) - 'url' - 'expires_at') || '{{"expired": true}}'::jsonb,
    result_file_id = NULL, result_expires_at = NULL, updated_at = clock_timestamp()
WHERE id = $1
RETURNING {_COLUMNS}
"""


def _job(record: asyncpg.Record | None) -> Job | None:
    return Job(**dict(record)) if record is not None else None


class JobStore:
    async def lock_user(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        """Held until the caller's transaction ends."""
        await conn.execute(LOCK_USER, user_id)

    async def in_flight(self, conn: asyncpg.Connection, user_id: UUID) -> int:
        return int(await conn.fetchval(IN_FLIGHT, user_id))

    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: UUID,
        kind: str,
        max_attempts: int,
        priority: int,
        params: dict[str, Any],
    ) -> Job:
        job = _job(await conn.fetchrow(INSERT, user_id, kind, max_attempts, priority, params))
        assert job is not None
        return job

    async def set_queue_job(self, conn: asyncpg.Connection, job_id: UUID, queue_job_id: int) -> Job:
        job = _job(await conn.fetchrow(SET_QUEUE_JOB, job_id, queue_job_id))
        assert job is not None
        return job

    async def get(self, conn: asyncpg.Connection, job_id: UUID) -> Job | None:
        return _job(await conn.fetchrow(GET, job_id))

    async def get_owned(
        self, conn: asyncpg.Connection, job_id: UUID, user_id: UUID, *, lock: bool = False
    ) -> Job | None:
        return _job(await conn.fetchrow(LOCK_OWNED if lock else GET_OWNED, job_id, user_id))

    async def page(
        self,
        conn: asyncpg.Connection,
        user_id: UUID,
        *,
        status: str | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Job]:
        at, last_id = before if before is not None else (None, None)
        rows = await conn.fetch(PAGE, user_id, status, at, last_id, limit)
        return [Job(**dict(r)) for r in rows]

    async def start(self, conn: asyncpg.Connection, job_id: UUID) -> Job | None:
        """None when the job is not queued any more (cancelled, or already taken)."""
        return _job(await conn.fetchrow(START, job_id))

    async def progress(self, conn: asyncpg.Connection, job_id: UUID, value: float, step: str | None) -> Job | None:
        return _job(await conn.fetchrow(PROGRESS, job_id, value, step))

    async def succeed(
        self,
        conn: asyncpg.Connection,
        job_id: UUID,
        *,
        result: dict[str, Any],
        result_file_id: UUID | None,
        result_expires_at: datetime | None,
    ) -> Job | None:
        return _job(await conn.fetchrow(SUCCEED, job_id, result, result_file_id, result_expires_at))

    async def retry(
        self, conn: asyncpg.Connection, job_id: UUID, *, error: str, step: str, retry_at: datetime
    ) -> Job | None:
        return _job(await conn.fetchrow(RETRY, job_id, error, step, retry_at))

    async def fail(self, conn: asyncpg.Connection, job_id: UUID, *, error: str) -> Job | None:
        return _job(await conn.fetchrow(FAIL, job_id, error))

    async def cancelled(self, conn: asyncpg.Connection, job_id: UUID) -> Job | None:
        return _job(await conn.fetchrow(CANCELLED, job_id))

    async def request_cancel(self, conn: asyncpg.Connection, job_id: UUID) -> Job | None:
        return _job(await conn.fetchrow(REQUEST_CANCEL, job_id))

    async def expiring(
        self, conn: asyncpg.Connection, *, now: datetime, limit: int
    ) -> list[tuple[UUID, UUID, UUID | None]]:
        """(job id, user id, result file id) of results past their expiry."""
        return [(r["id"], r["user_id"], r["result_file_id"]) for r in await conn.fetch(EXPIRING, now, limit)]

    async def expire(self, conn: asyncpg.Connection, job_id: UUID) -> Job | None:
        return _job(await conn.fetchrow(EXPIRE, job_id))
