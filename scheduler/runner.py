"""APScheduler 3.11 (`AsyncIOScheduler`) running the jobs in this process, and the single-run claim
that makes each run happen once across processes (services.schedule.ScheduledRuns).

Every process schedules every job on the same grid: an IntervalTrigger anchored at a fixed instant, so
all processes fire a job at the same instants and name the run by the same slot (the grid instant,
ISO 8601 UTC). `run(name, slot)` runs a job for a given slot directly (tests, operators)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from core.tasks import TaskSet
from core.timefmt import iso
from scheduler.jobs import Job
from services.schedule import RunOutcome, ScheduledRuns

log = structlog.get_logger(__name__)
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


def slot_of(when: datetime, interval_seconds: float) -> datetime:
    """The start of the grid interval holding `when`."""
    elapsed = (when - ANCHOR).total_seconds()
    return ANCHOR + timedelta(seconds=(elapsed // interval_seconds) * interval_seconds)


def _slot_time(slot: datetime | str) -> datetime:
    if isinstance(slot, str):
        slot = datetime.fromisoformat(slot.replace("Z", "+00:00"))
    return slot if slot.tzinfo is not None else slot.replace(tzinfo=UTC)


class Scheduler:
    def __init__(self, jobs: list[Job], runs: ScheduledRuns) -> None:
        self._jobs = {job.name: job for job in jobs}
        self._runs = runs
        self._scheduler: AsyncIOScheduler | None = None
        self._in_flight = TaskSet()

    def start(self) -> None:
        """Inside the running loop (a cleanup context)."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        for job in self._jobs.values():
            scheduler.add_job(
                self._fire,
                IntervalTrigger(seconds=job.interval_seconds, start_date=ANCHOR, timezone=UTC),
                args=[job.name],
                id=job.name,
                name=job.name,
                # A late fire (busy loop) still runs if it is within half an interval: its slot is
                # still the right one. Missed fires collapse into one; one run of a job at a time.
                misfire_grace_time=max(1, int(job.interval_seconds / 2)),
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler started", jobs={j.name: j.interval_seconds for j in self._jobs.values()})

    async def _fire(self, name: str) -> None:
        job = self._jobs[name]
        slot = slot_of(datetime.now(UTC), job.interval_seconds)
        # Shielded: stopping the scheduler must not cut a run in the middle of its transaction;
        # aclose() waits for it instead.
        await asyncio.shield(self._in_flight.spawn(self.run(name, slot)))

    async def run(self, name: str, slot: datetime | str) -> RunOutcome:
        """Run job `name` for `slot` unless some process already claimed that slot."""
        job = self._jobs[name]
        at = _slot_time(slot)
        return await self._runs.run_once(name, iso(at), lambda: job.work(at))

    async def aclose(self, grace_seconds: float) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler stops on the next loop iteration
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
