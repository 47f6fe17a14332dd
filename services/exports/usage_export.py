"""Usage export as a background job (`POST /usage/export` with `async: true`): the same file the request
answers directly, kept as the job's result with a signed link."""

from __future__ import annotations

from typing import Any

from core.entities import Job, Principal
from services.jobs import JobKind, JobRun, JobService
from services.usage import UsageService

KIND = "usage_export"


class UsageExports:
    def __init__(self, *, usage: UsageService, jobs: JobService) -> None:
        self._usage = usage
        self._jobs = jobs

    def kind(self) -> JobKind:
        return JobKind(KIND, self.run, max_attempts=3, backoff_seconds=2.0, priority=10)

    async def start(self, user: Principal, *, fmt: str, days: int) -> Job:
        params = {"format": fmt, "days": days, "timezone": user.timezone}
        return await self._jobs.create(user.id, KIND, params)

    async def run(self, run: JobRun) -> dict[str, Any]:
        await run.progress(0.1, "reading usage", force=True)
        export = await self._usage.export(
            run.user_id, run.params["timezone"], days=int(run.params["days"]), fmt=run.params["format"]
        )
        await run.progress(0.8, "storing", force=True)
        await run.store_file(filename=export.filename, content_type=export.content_type, data=export.data)
        return {"format": run.params["format"], "days": int(run.params["days"])}
