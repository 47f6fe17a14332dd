"""The job queue on procrastinate: Parlor's tasks, the retry strategy that lets the service name each retry's
time, the recovery of jobs whose worker died, and the worker that runs them in any process.

Each task is thin (DESIGN: a task calls a service method): `parlor.run_job` runs one attempt of a job row
(services.jobs.JobService.execute), `parlor.push` one push delivery (services.push_delivery)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import procrastinate
import structlog
from procrastinate import JobContext, RetryDecision
from procrastinate.exceptions import JobAborted
from procrastinate.job_context import AbortReason

from services.jobs import PUSH_TASK, QUEUE, RUN_TASK, JobCancelled, JobService, RetryLater

log = structlog.get_logger(__name__)
RECOVER_TASK = "parlor.recover_stalled"
# A worker that sent no heartbeat for this long is dead: its running jobs run again elsewhere.
STALLED_AFTER_SECONDS = 30.0
# Finished queue entries are kept this long (the jobs rows keep the history owners see).
KEEP_FINISHED_HOURS = 72
# A worker that stopped on an error starts again after this long, doubling up to the maximum (the delay
# starts over once a run lasted RESTART_RESET_SECONDS).
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
# How long the queue's pool waits for a connection (an outage fails fast and the worker restarts), and the
# slack beyond the jobs' grace period that closing may take.
POOL_TIMEOUT_SECONDS = 5.0
CLOSE_SLACK_SECONDS = 3.0


class PushDeliverer(Protocol):
    async def deliver(
        self, *, notification_id: UUID, tokens: Sequence[str] | None = None, attempt: int = 1
    ) -> dict[str, int]: ...


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int
    poll_seconds: float = 1.0
    shutdown_seconds: float = 10.0


class ServiceRetry(procrastinate.BaseRetryStrategy):
    """The service decides: `RetryLater` names when the next attempt runs; a worker shutting down hands its
    job back to run again at once; anything else is final (the service already recorded it)."""

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=exception.delay_seconds))
        if isinstance(exception, asyncio.CancelledError):
            return RetryDecision(retry_at=datetime.now(UTC))
        return None


def build_queue(dsn: str, *, jobs: JobService, push: PushDeliverer | None, pool_size: int) -> procrastinate.App:
    """The procrastinate app on its own small psycopg pool (procrastinate has no asyncpg connector)."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=max(2, pool_size), timeout=POOL_TIMEOUT_SECONDS
        )
    )

    @app.task(name=RUN_TASK, queue=QUEUE, pass_context=True, retry=ServiceRetry())
    async def run_job(context: JobContext, job_id: str) -> dict[str, Any] | None:
        try:
            return await jobs.execute(UUID(job_id), aborting=lambda: context.abort_reason() is AbortReason.USER_REQUEST)
        except JobCancelled as err:
            # Aborted on the owner's request: final, never retried.
            raise JobAborted() from err

    @app.task(name=PUSH_TASK, queue=QUEUE)
    async def push_delivery(notification_id: str, tokens: list[str] | None = None, attempt: int = 1) -> dict[str, int]:
        if push is None:
            return {"skipped": 1}
        return await push.deliver(notification_id=UUID(notification_id), tokens=tokens, attempt=attempt)

    @app.periodic(cron="* * * * *", periodic_id="recover")
    @app.task(name=RECOVER_TASK, queue=QUEUE, queueing_lock=RECOVER_TASK)
    async def recover_stalled(timestamp: int) -> dict[str, int]:
        """Jobs whose worker stopped sending heartbeats (its process was killed) run again."""
        stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_AFTER_SECONDS)
        count = 0
        for entry in stalled:
            if entry.task_name == RUN_TASK:
                await jobs.requeue_stalled(UUID(str(entry.task_kwargs["job_id"])))
            await app.job_manager.retry_job(entry)
            count += 1
        if count:
            log.warning("jobs of a dead worker queued again", jobs=count)
        await app.job_manager.delete_old_jobs(
            KEEP_FINISHED_HOURS, queue=QUEUE, include_failed=True, include_cancelled=True, include_aborted=True
        )
        return {"requeued": count}

    # Referenced so linters see the tasks are used: procrastinate finds them by name.
    del run_job, push_delivery, recover_stalled
    return app


class Worker:
    """A procrastinate worker as a task of this process: `start` inside the running loop, `aclose` at
    shutdown (running jobs get the grace period, then go back to the queue)."""

    def __init__(self, app: procrastinate.App, settings: WorkerSettings) -> None:
        self._app = app
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._opened = False

    async def open(self) -> None:
        """Opens the queue's connection pool (also for processes that only defer)."""
        await self._app.open_async()
        self._opened = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="parlor-job-worker")
        log.info("job worker started", concurrency=self._settings.concurrency)

    async def _supervise(self) -> None:
        """procrastinate's worker stops when one of its side tasks fails (the database went away under its
        listener): start it again, backing off, so jobs resume by themselves once the database is back.
        Jobs it was running are picked up by the stalled-job recovery."""
        delay = RESTART_FIRST_SECONDS
        while True:
            started = time.monotonic()
            try:
                await self._app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=self._settings.concurrency,
                    install_signal_handlers=False,
                    fetch_job_polling_interval=self._settings.poll_seconds,
                    abort_job_polling_interval=self._settings.poll_seconds,
                    shutdown_graceful_timeout=self._settings.shutdown_seconds,
                    delete_jobs="successful",
                    name="parlor",
                )
                return
            except Exception as err:  # noqa: BLE001 - logged; the worker comes back
                if time.monotonic() - started > RESTART_RESET_SECONDS:
                    delay = RESTART_FIRST_SECONDS
                log.warning("job worker stopped; starting it again", error=type(err).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_SECONDS)

    async def wait(self) -> None:
        """Until the worker stops (the `python -m server worker` process)."""
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        """Running jobs get the grace period; past it (or with the database gone, when procrastinate's own
        shutdown would wait on its pool) the worker is left behind: its jobs are recovered as stalled."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=self._settings.shutdown_seconds + CLOSE_SLACK_SECONDS)
            if pending:
                log.warning("job worker did not stop in time; its running jobs will be recovered elsewhere")
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_SLACK_SECONDS)
        if self._opened:
            self._opened = False
            try:
                await asyncio.wait_for(self._app.close_async(), CLOSE_SLACK_SECONDS)
            except (Exception, TimeoutError) as err:  # noqa: BLE001 - the database may be gone at shutdown
                log.warning("job queue pool not closed cleanly", error=type(err).__name__)
