"""Admin broadcasts (`POST /admin/notifications`): one job that stores a `broadcast` notification for every
user of the audience in batches, sends each live and pushes to those without a socket, with progress per
batch. No request waits for it; a retried attempt skips the users it already reached."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg

from core.entities import Job, Principal
from services.admin import AdminService
from services.jobs import JobKind, JobRun, JobService
from services.notifications import NotificationService
from storage.broadcasts import BroadcastStore

Audience = Literal["all", "premium", "free"]
KIND = "broadcast"
BATCH = 500


class Broadcasts:
    def __init__(
        self, *, pool: asyncpg.Pool, jobs: JobService, notifications: NotificationService, admin: AdminService
    ) -> None:
        self._pool = pool
        self._jobs = jobs
        self._notifications = notifications
        self._admin = admin
        self._store = BroadcastStore()

    def kind(self) -> JobKind:
        # Behind what a person waits for (exports); retried from where it stopped.
        return JobKind(KIND, self.run, max_attempts=5, backoff_seconds=5.0, priority=0)

    async def start(self, actor: Principal, *, title: str, body: str, audience: Audience) -> Job:
        """Admins only (403 otherwise); audited. The job is owned by the admin who sent it."""
        self._admin.require_admin(actor)
        job = await self._jobs.create(actor.id, KIND, {"title": title, "body": body, "audience": audience})
        await self._admin.audit(
            actor, action="notifications.broadcast", target_id=str(job.id), details={"audience": audience}
        )
        return job

    async def run(self, run: JobRun) -> dict[str, Any]:
        audience: str = run.params["audience"]
        data = {"broadcast_id": str(run.job.id)}
        async with self._pool.acquire() as conn:
            total = await self._store.audience_size(conn, audience)
        reached = sent = 0
        after = None
        await run.progress(0.0, f"0 of {total} users", force=True)
        while True:
            async with self._pool.acquire() as conn:
                batch = await self._store.audience_page(conn, audience, after=after, limit=BATCH)
                if not batch:
                    break
                stored = await self._store.insert_batch(
                    conn,
                    batch,
                    title=run.params["title"],
                    body=run.params["body"],
                    data=data,
                    broadcast_id=data["broadcast_id"],
                )
            await self._notifications.delivered(stored)
            reached += len(batch)
            sent += len(stored)
            after = batch[-1]
            await run.progress(reached / max(1, total), f"{reached} of {total} users", force=True)
            if len(batch) < BATCH:
                break
        return {"audience": audience, "users": reached, "notifications": sent}
