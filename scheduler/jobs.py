"""The scheduled jobs. Each is thin: a name, an interval and the service method it calls with the
run's slot time (SPEC §8; DESIGN: scheduler jobs hold no SQL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.billing.config import BillingSettings
from services.files.service import FilesService
from services.jobs import JobService
from services.retention import RetentionService
from services.subscriptions import SubscriptionService

Work = Callable[[datetime], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Job:
    name: str
    interval_seconds: float
    work: Work  # called with the slot's time; returns a small summary stored in job_runs.result


def build_jobs(
    *,
    settings: BillingSettings,
    subscriptions: SubscriptionService,
    retention: RetentionService,
    files: FilesService | None = None,
    jobs: JobService | None = None,
) -> list[Job]:
    return (
        [
            # Subscriptions past their period: re-check (Google Play), grace, expiry; plans recomputed.
            Job("subscriptions", settings.job_subscriptions_seconds, subscriptions.expire_due),
            # Free-plan chat history older than FREE_HISTORY_DAYS.
            Job("history_cleanup", settings.job_history_cleanup_seconds, retention.cleanup_history),
            # Old usage rows, billing events and job runs.
            Job("housekeeping", settings.job_housekeeping_seconds, retention.housekeeping),
        ]
        + (
            # Chat attachments never sent within a day, and the blobs of deleted files.
            [Job("file_sweep", settings.job_file_sweep_seconds, files.sweep_orphans)] if files is not None else []
        )
        + (
            # Background jobs' results past JOB_RESULT_TTL_HOURS: their files deleted, their links dropped.
            [Job("job_results", settings.job_results_seconds, jobs.expire_results)] if jobs is not None else []
        )
    )
