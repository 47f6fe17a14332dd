"""JobService: background jobs as their owners see them. Creating one stores its row and puts it on the
queue in one transaction; a worker (jobs/, any process) calls `execute`, which runs the kind's handler and
records every change (started, progress, retry with backoff, succeeded with a result, failed, cancelled),
each sent as `job:progress` to the owner's sockets after its commit.

The queue (procrastinate) decides when and where a job runs: priority, retries at the time `RetryLater`
names, one worker per job across every process. This service decides what the owner sees and what a run
means: the `jobs` row is the truth the API shows."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from uuid import UUID

import asyncpg
import structlog

from core.entities import Job
from core.errors import AppError, NotFound, TooManyJobs
from core.events import Events, JobProgressEvent
from core.pages import Slice
from services.files.service import FilesService
from services.jobs.run import JobCancelled, JobFailed, JobGaveUp, JobKind, JobRun, RetryLater
from services.notices import Notice, send_notices
from services.notifications import NotificationService
from storage.job_queue import QUEUE, JobQueue
from storage.jobs import JobStore

log = structlog.get_logger(__name__)

# The queue's task names (jobs/ defines the tasks under these names).
__all__ = ["PUSH_TASK", "QUEUE", "RUN_TASK", "JobService", "JobSettings"]
RUN_TASK = "parlor.run_job"
PUSH_TASK = "parlor.push"
# Pushes go before everything else waiting: a phone waits for them.
PUSH_PRIORITY = 100
EXPIRE_BATCH = 200
# How a kind is named to people (job_done notifications).
LABELS = {
    "chat_export": "Chat export",
    "usage_export": "Usage export",
    "knowledge_ingest": "Knowledge file",
    "broadcast": "Broadcast",
}


@dataclass(frozen=True)
class JobSettings:
    max_in_flight: int = 5  # per user, queued or running; 0 = no limit
    result_ttl_seconds: int = 7 * 24 * 3600
    # Where signed links in job results point (empty: a path on this server, for the local file store).
    public_base_url: str = ""


class JobService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        events: Events,
        files: FilesService,
        notifications: NotificationService,
        settings: JobSettings,
    ) -> None:
        self._pool = pool
        self._events = events
        self.files = files
        self._notifications = notifications
        self._settings = settings
        self._kinds: dict[str, JobKind] = {}
        self._store = JobStore()
        self._queue = JobQueue()

    def register(self, kind: JobKind) -> None:
        self._kinds[kind.name] = kind

    def kind(self, name: str) -> JobKind:
        return self._kinds[name]

    # --- owners ----------------------------------------------------------------------------------

    async def create(self, user_id: UUID, kind: str, params: dict[str, Any], *, priority: int | None = None) -> Job:
        """Queue a job for the user; 429 `too_many_jobs` when they already have JOBS_MAX_IN_FLIGHT queued or
        running. The row and the queue entry commit together."""
        spec = self._kinds[kind]
        async with self._pool.acquire() as conn, conn.transaction():
            await self._store.lock_user(conn, user_id)
            limit = self._settings.max_in_flight
            if limit and await self._store.in_flight(conn, user_id) >= limit:
                raise TooManyJobs(f"at most {limit} jobs may be queued or running at once", retry_after=5)
            job = await self._store.insert(
                conn,
                user_id=user_id,
                kind=kind,
                max_attempts=spec.max_attempts,
                priority=spec.priority if priority is None else priority,
                params=params,
            )
            queue_job_id = await self._queue.defer(
                conn, task=RUN_TASK, args={"job_id": str(job.id)}, priority=job.priority
            )
            job = await self._store.set_queue_job(conn, job.id, queue_job_id)
        log.info("job queued", job_id=str(job.id), kind=kind, priority=job.priority)
        await self._emit(job)
        return job

    async def get(self, user_id: UUID, job_id: UUID) -> Job:
        """404 for a job that is not the user's."""
        async with self._pool.acquire() as conn:
            job = await self._store.get_owned(conn, job_id, user_id)
        if job is None:
            raise NotFound("job not found")
        return job

    async def list(
        self, user_id: UUID, *, status: str | None, before: tuple[datetime, UUID] | None, limit: int
    ) -> Slice[Job]:
        async with self._pool.acquire() as conn:
            rows = await self._store.page(conn, user_id, status=status, before=before, limit=limit + 1)
        return Slice(items=rows[:limit], more=len(rows) > limit)

    async def cancel(self, user_id: UUID, job_id: UUID) -> Job:
        """A queued job is cancelled at once and never runs; a running one is asked to stop and ends
        `cancelled` within about a second. A finished job is answered as it is."""
        async with self._pool.acquire() as conn, conn.transaction():
            job = await self._store.get_owned(conn, job_id, user_id, lock=True)
            if job is None:
                raise NotFound("job not found")
            if job.finished:
                return job
            entry = await self._queue.cancel(conn, job.queue_job_id) if job.queue_job_id is not None else None
            if job.status == "queued" and entry != "doing":
                changed = await self._store.cancelled(conn, job.id)
            else:
                # Running, or taken by a worker a moment ago: the run sees the flag (or the queue's abort).
                changed = await self._store.request_cancel(conn, job.id)
        job = changed or job
        log.info("job cancel", job_id=str(job.id), status=job.status)
        if changed is not None:
            await self._emit(job)
        return job

    # --- workers ---------------------------------------------------------------------------------

    async def execute(self, job_id: UUID, *, aborting: Callable[[], bool]) -> dict[str, Any] | None:
        """Run one attempt of a job (called by the queue's worker). `aborting` tells a cancellation asked for
        through the queue from a worker shutting down. Raises RetryLater (try again then), JobGaveUp (failed
        for good), JobCancelled (the owner cancelled it) or CancelledError (shutdown: the queue runs it
        again); returns the result otherwise."""
        async with self._pool.acquire() as conn:
            job = await self._store.start(conn, job_id)
            if job is None:
                await self._not_started(conn, job_id)
                return None
        await self._emit(job)
        run = JobRun(job=job, service=self)
        spec = self._kinds.get(job.kind)
        try:
            if spec is None:
                raise JobFailed(f"no handler for jobs of kind {job.kind}")
            result = await spec.handler(run) or {}
            # Inside the try: a failure to keep the result (the file store down) is retried like any other.
            return await self._end_succeeded(run, result)
        except asyncio.CancelledError:
            run.stop()
            if aborting() or await self._cancel_requested(job.id):
                await self._end_cancelled(run)
                raise JobCancelled() from None
            await self._interrupted(run)
            raise
        except JobCancelled:
            await self._end_cancelled(run)
            raise
        except Exception as err:  # retried with backoff, unless no retry can mend it
            if isinstance(err, JobFailed) or (isinstance(err, AppError) and err.status < 500):
                # Refused input (a deleted chat, another user's file): retrying cannot help.
                await self._end_failed(run, str(err))
                raise JobGaveUp(str(err)) from err
            await self._retry_or_fail(run, spec, err)

    async def report_progress(self, job_id: UUID, value: float, step: str | None) -> Job | None:
        async with self._pool.acquire() as conn:
            job = await self._store.progress(conn, job_id, value, step)
        if job is not None:
            await self._emit(job)
        return job

    async def _not_started(self, conn: asyncpg.Connection, job_id: UUID) -> None:
        job = await self._store.get(conn, job_id)
        if job is not None and job.status == "queued" and job.cancel_requested:
            # Cancelled while a worker was taking it.
            cancelled = await self._store.cancelled(conn, job_id)
            if cancelled is not None:
                await self._emit(cancelled)

    async def _cancel_requested(self, job_id: UUID) -> bool:
        async with self._pool.acquire() as conn:
            job = await self._store.get(conn, job_id)
        return job is None or job.cancel_requested

    async def _retry_or_fail(self, run: JobRun, spec: JobKind | None, err: Exception) -> NoReturn:
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        await self._discard(run)
        if spec is not None and run.attempt < spec.max_attempts:
            delay = spec.delay(run.attempt)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            log.warning("job attempt failed, retrying", job_id=str(run.job.id), attempt=run.attempt, error=message)
            async with self._pool.acquire() as conn:
                job = await self._store.retry(
                    conn, run.job.id, error=message, step=f"retrying in {delay:g} s", retry_at=retry_at
                )
            if job is not None:
                await self._emit(job)
            raise RetryLater(message, delay_seconds=delay) from err
        log.error("job failed", job_id=str(run.job.id), attempts=run.attempt, error=message)
        await self._end_failed(run, message)
        raise JobGaveUp(message) from err

    async def _end_succeeded(self, run: JobRun, result: dict[str, Any]) -> dict[str, Any]:
        result = dict(result)
        file_id: UUID | None = None
        expires_at = datetime.now(UTC) + timedelta(seconds=self._settings.result_ttl_seconds)
        if run.files:
            stored = run.files[-1]
            file_id = stored.id
            link = await self.files.owner_link(
                run.user_id,
                stored.id,
                variant="original",
                expires_in=self._settings.result_ttl_seconds,
                base_url=self._settings.public_base_url.rstrip("/"),
            )
            result.update(
                file_id=str(stored.id),
                url=link.url,
                expires_at=link.expires_at.isoformat(),
                filename=stored.filename,
                content_type=stored.content_type,
                size=stored.size,
            )
        async with self._pool.acquire() as conn:
            job = await self._store.succeed(
                conn,
                run.job.id,
                result=result,
                result_file_id=file_id,
                result_expires_at=expires_at if file_id is not None else None,
            )
        if job is None:  # cancelled at the very end: the cancel wins, nothing is kept
            await self._discard(run)
            return result
        run.files.clear()  # the job's result owns them now: nothing below may discard them
        log.info("job succeeded", job_id=str(job.id), kind=job.kind, attempts=job.attempts)
        await self._emit(job)
        await self._notify_done(job, ok=True)
        return result

    async def _end_failed(self, run: JobRun, message: str) -> None:
        await self._discard(run)
        async with self._pool.acquire() as conn:
            job = await self._store.fail(conn, run.job.id, error=message)
        if job is not None:
            await self._emit(job)
            await self._notify_done(job, ok=False)

    async def _end_cancelled(self, run: JobRun) -> None:
        await self._discard(run)
        async with self._pool.acquire() as conn:
            job = await self._store.cancelled(conn, run.job.id)
        if job is not None:
            log.info("job cancelled while running", job_id=str(job.id))
            await self._emit(job)

    async def _interrupted(self, run: JobRun) -> None:
        """The worker is shutting down: the queue runs the job again (here or elsewhere)."""
        await self._discard(run)
        async with self._pool.acquire() as conn:
            job = await self._store.retry(
                conn, run.job.id, error="interrupted by a shutdown", step="queued", retry_at=datetime.now(UTC)
            )
        if job is not None:
            await self._emit(job)

    async def requeue_stalled(self, job_id: UUID) -> None:
        """The worker running the job died (no heartbeat): the queue runs it again; the row says so."""
        async with self._pool.acquire() as conn:
            job = await self._store.retry(
                conn, job_id, error="its worker stopped", step="queued", retry_at=datetime.now(UTC)
            )
        if job is not None:
            await self._emit(job)

    async def _discard(self, run: JobRun) -> None:
        """Files of a run that did not succeed are not left behind."""
        for stored in run.files:
            try:
                await self.files.delete_owned(run.user_id, stored.id)
            except NotFound:
                pass
        run.files.clear()

    async def _notify_done(self, job: Job, *, ok: bool) -> None:
        label = LABELS.get(job.kind, job.kind.replace("_", " ").capitalize())
        data: dict[str, str | int] = {"job_id": str(job.id), "kind": job.kind, "status": job.status}
        if job.result_file_id is not None:
            data["file_id"] = str(job.result_file_id)
        title = f"{label} ready" if ok else f"{label} failed"
        body = "Your download is ready." if ok and job.result_file_id else ("Done." if ok else (job.error or ""))
        await send_notices(self._notifications, Notice(job.user_id, "job_done", title, body[:200], data))

    async def _emit(self, job: Job) -> None:
        await self._events.to_user(
            job.user_id,
            JobProgressEvent(
                job_id=job.id,
                kind=job.kind,
                status=job.status,  # type: ignore[arg-type]  # the table's CHECK allows only these
                progress=job.progress,
                step=job.step,
                attempts=job.attempts,
                result=job.result,
                error=job.error,
                updated_at=job.updated_at,
            ),
        )

    # --- push (a queue task without a job row: nobody watches it) ---------------------------------

    async def defer_push(
        self, *, notification_id: UUID, tokens: Sequence[str] | None, attempt: int, delay_seconds: float
    ) -> None:
        scheduled = datetime.now(UTC) + timedelta(seconds=delay_seconds) if delay_seconds > 0 else None
        args: dict[str, Any] = {
            "notification_id": str(notification_id),
            "tokens": builtins.list(tokens) if tokens is not None else None,
            "attempt": attempt,
        }
        async with self._pool.acquire() as conn:
            await self._queue.defer(conn, task=PUSH_TASK, args=args, priority=PUSH_PRIORITY, scheduled_at=scheduled)

    # --- scheduler -------------------------------------------------------------------------------

    async def expire_results(self, slot: datetime) -> dict[str, Any]:
        """The scheduled run (once across processes): results past JOB_RESULT_TTL lose their file and link."""
        expired = 0
        while True:
            async with self._pool.acquire() as conn:
                due = await self._store.expiring(conn, now=slot, limit=EXPIRE_BATCH)
            for job_id, user_id, file_id in due:
                if file_id is not None:
                    try:
                        await self.files.delete_owned(user_id, file_id)
                    except NotFound:
                        pass
                async with self._pool.acquire() as conn:
                    await self._store.expire(conn, job_id)
                expired += 1
            if len(due) < EXPIRE_BATCH:
                return {"expired_results": expired}
