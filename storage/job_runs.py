"""JobRunStore: one row per scheduled run (job, slot). Every process schedules every job; the one whose
INSERT wins the slot does the work, the others see the slot taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

CLAIM = "INSERT INTO job_runs (job, slot, node) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1"
FINISH = "UPDATE job_runs SET finished_at = now(), result = $3 WHERE job = $1 AND slot = $2"
FOR_JOB = """
SELECT job, slot, node, started_at, finished_at, result FROM job_runs WHERE job = $1
ORDER BY started_at DESC LIMIT $2
"""
PRUNE = "DELETE FROM job_runs WHERE started_at < $1"


@dataclass(frozen=True)
class JobRunRow:
    job: str
    slot: str
    node: str
    started_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None


class JobRunStore:
    async def claim(self, conn: asyncpg.Connection, *, job: str, slot: str, node: str) -> bool:
        """True for the one caller that gets this (job, slot); committed at once (autocommit)."""
        return await conn.fetchval(CLAIM, job, slot, node) is not None

    async def finish(self, conn: asyncpg.Connection, *, job: str, slot: str, result: dict[str, Any]) -> None:
        await conn.execute(FINISH, job, slot, result)  # the pool encodes jsonb

    async def for_job(self, conn: asyncpg.Connection, job: str, *, limit: int = 100) -> list[JobRunRow]:
        return [JobRunRow(**dict(r)) for r in await conn.fetch(FOR_JOB, job, limit)]

    async def prune(self, conn: asyncpg.Connection, *, before: datetime) -> int:
        return int((await conn.execute(PRUNE, before)).rsplit(" ", 1)[-1])
