"""What a job kind is (`JobKind`), what its handler is given (`JobRun`: the job, progress, a stop flag, a
place for its result file), and the outcomes a run can end in besides returning a result."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from core.entities import Job, StoredFile

if TYPE_CHECKING:
    from services.jobs.service import JobService

# A progress change reaches the database and the user's sockets at most this often per job (status
# changes and the end always do).
PROGRESS_INTERVAL_SECONDS = 0.25


class JobCancelled(Exception):
    """The owner cancelled the job while it ran; raised at the run's next check."""


class RetryLater(Exception):
    """The run failed and is tried again after `delay_seconds` (the queue's retry strategy reads it)."""

    def __init__(self, message: str, *, delay_seconds: float) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class JobFailed(Exception):
    """A failure no retry can mend (the chat was deleted, the input is refused): the job fails at once."""


class JobGaveUp(Exception):
    """The job's last attempt failed; it is `failed` now (the queue marks its entry failed too)."""


Handler = Callable[["JobRun"], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its handler, how often it may run (attempts), the backoff between attempts (base *
    2^(attempt-1) seconds) and the priority its jobs get (higher runs first)."""

    name: str
    handler: Handler
    max_attempts: int = 3
    backoff_seconds: float = 2.0
    priority: int = 0

    def delay(self, attempt: int) -> float:
        return float(self.backoff_seconds * 2 ** max(0, attempt - 1))


@dataclass
class JobRun:
    """One attempt of one job, handed to the kind's handler."""

    job: Job
    service: JobService
    _stop: threading.Event = field(default_factory=threading.Event)
    _last_write: float = 0.0
    _progress: float = 0.0
    files: list[StoredFile] = field(default_factory=list)

    @property
    def user_id(self) -> UUID:
        return self.job.user_id

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def should_stop(self) -> bool:
        """Thread-safe: CPU work in a worker thread polls it and stops early once the run is cancelled."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def progress(self, value: float, step: str | None = None, *, force: bool = False) -> None:
        """Report progress (0..1, never going back) and what is being done. Written and sent at most every
        PROGRESS_INTERVAL_SECONDS; raises JobCancelled when the owner cancelled the job meanwhile."""
        if self._stop.is_set():
            raise JobCancelled()
        self._progress = max(self._progress, min(1.0, max(0.0, value)))
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_write = now
        job = await self.service.report_progress(self.job.id, self._progress, step)
        if job is None or job.cancel_requested:
            self._stop.set()
            raise JobCancelled()

    async def store_file(self, *, filename: str, content_type: str, data: bytes) -> StoredFile:
        """Keep a file the job made for its owner; removed again if the run does not succeed."""
        stored = await self.service.files.store_generated(
            self.job.user_id, category="export", filename=filename, content_type=content_type, data=data
        )
        self.files.append(stored)
        return stored
