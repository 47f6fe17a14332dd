"""RetentionService: what the scheduler deletes. Chat history beyond the plan's `history_days`
(FREE_HISTORY_DAYS, default 7; PREMIUM_HISTORY_DAYS, default 0 = keep everything), and housekeeping of
tables that only grow: daily usage rows, applied billing events, job runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.billing.config import BillingSettings
from services.plans import Plans
from storage.billing import BillingEventStore
from storage.job_runs import JobRunStore
from storage.retention import RetentionStore

log = structlog.get_logger(__name__)
BATCH = 2000
# A run stops after this many batches per table; the next run carries on.
MAX_BATCHES = 100


class RetentionService:
    def __init__(self, *, pool: asyncpg.Pool, plans: Plans, settings: BillingSettings) -> None:
        self._pool = pool
        self._plans = plans
        self._settings = settings
        self._store = RetentionStore()
        self._events = BillingEventStore()
        self._runs = JobRunStore()

    async def cleanup_history(self, at: datetime) -> dict[str, Any]:
        """Delete messages older than the plan's history_days in the sessions of users on that plan,
        as of `at`. A plan with history_days 0 (premium by default) is never touched."""
        deleted: dict[str, Any] = {}
        for plan in ("free", "premium"):
            days = self._plans.limits(plan).history_days
            if days <= 0:
                continue
            before = at - timedelta(days=days)
            total = 0
            for _ in range(MAX_BATCHES):
                async with self._pool.acquire() as conn:
                    count = await self._store.delete_old_messages(conn, plan=plan, before=before, limit=BATCH)
                total += count
                if count < BATCH:
                    break
            deleted[plan] = total
            if total:
                log.info("old history deleted", plan=plan, messages=total, before=before.isoformat())
        return {"deleted_messages": deleted}

    async def housekeeping(self, at: datetime) -> dict[str, Any]:
        """Prune usage rows older than USAGE_RETENTION_DAYS, billing events older than
        BILLING_EVENTS_RETENTION_DAYS and job runs older than JOB_RUNS_RETENTION_DAYS."""
        usage_before = (at - timedelta(days=self._settings.usage_retention_days)).date()
        usage = 0
        for _ in range(MAX_BATCHES):
            async with self._pool.acquire() as conn:
                count = await self._store.prune_usage(conn, before=usage_before, limit=BATCH)
            usage += count
            if count < BATCH:
                break
        async with self._pool.acquire() as conn:
            events = await self._events.prune(
                conn, before=at - timedelta(days=self._settings.billing_events_retention_days)
            )
            runs = await self._runs.prune(conn, before=at - timedelta(days=self._settings.job_runs_retention_days))
        return {"usage_rows": usage, "billing_events": events, "job_runs": runs}
