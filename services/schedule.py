"""ScheduledRuns: a scheduled run happens once across every process. Each process fires every job;
before working, a run claims its (job, slot) row in job_runs, and only the process whose INSERT wins
does the work. The claim commits before the work starts: a run that fails (or whose process dies) is
not retried in that slot; the next slot does the work (every job is written to catch up)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from storage.job_runs import JobRunRow, JobRunStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    job: str
    slot: str
    ran: bool  # False: another process (or an earlier call) had the slot
    result: dict[str, Any] | None


class ScheduledRuns:
    def __init__(self, *, pool: asyncpg.Pool, node: str) -> None:
        self._pool = pool
        self.node = node
        self._store = JobRunStore()

    async def run_once(self, job: str, slot: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> RunOutcome:
        async with self._pool.acquire() as conn:
            claimed = await self._store.claim(conn, job=job, slot=slot, node=self.node)
        if not claimed:
            log.info("job slot taken", job=job, slot=slot, node=self.node)
            return RunOutcome(job, slot, ran=False, result=None)
        log.info("job run", job=job, slot=slot, node=self.node)
        started = time.perf_counter()
        try:
            result = await work()
        except Exception as err:
            log.exception("job failed", job=job, slot=slot)
            result = {"error": type(err).__name__}
        result = {**result, "ms": round((time.perf_counter() - started) * 1000, 1)}
        async with self._pool.acquire() as conn:
            await self._store.finish(conn, job=job, slot=slot, result=result)
        log.info("job done", job=job, slot=slot, node=self.node, result=result)
        return RunOutcome(job, slot, ran=True, result=result)

    async def runs(self, job: str, *, limit: int = 100) -> list[JobRunRow]:
        async with self._pool.acquire() as conn:
            return await self._store.for_job(conn, job, limit=limit)
