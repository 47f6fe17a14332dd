"""Knowledge-base ingestion as a background job: a large file (KnowledgeService.is_large: over 1 MiB, or a
PDF of more than 20 pages), or any file the client asks to add with `async: true`, is read, chunked and
stored by a worker, with progress per PDF page; all or nothing, so a cancel leaves no entry."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from core.entities import Job, Principal
from services.jobs import JobKind, JobRun, JobService
from services.knowledge.service import KnowledgeService

KIND = "knowledge_ingest"


class KnowledgeIngests:
    def __init__(self, *, knowledge: KnowledgeService, jobs: JobService) -> None:
        self._knowledge = knowledge
        self._jobs = jobs

    def kind(self) -> JobKind:
        return JobKind(KIND, self.run, max_attempts=3, backoff_seconds=2.0, priority=5)

    async def wants_job(self, user: Principal, persona_id: UUID, file_id: UUID) -> bool:
        """After the request's checks (404/422/413 as for an inline add): whether the file is large."""
        stored = await self._knowledge.checked_file(user_id=user.id, persona_id=persona_id, file_id=file_id)
        return await self._knowledge.is_large(stored)

    async def start(self, user: Principal, persona_id: UUID, file_id: UUID, *, title: str | None) -> Job:
        await self._knowledge.checked_file(user_id=user.id, persona_id=persona_id, file_id=file_id)
        params = {"persona_id": str(persona_id), "file_id": str(file_id), "title": title}
        return await self._jobs.create(user.id, KIND, params)

    async def run(self, run: JobRun) -> dict[str, Any]:
        async def progress(fraction: float, step: str) -> None:
            # "page i of n" for every page: written at most a few times a second.
            await run.progress(fraction, step)

        entry = await self._knowledge.ingest_file(
            user_id=run.user_id,
            persona_id=UUID(run.params["persona_id"]),
            file_id=UUID(run.params["file_id"]),
            title=run.params.get("title"),
            progress=progress,
        )
        return {
            "entry_id": str(entry.id),
            "persona_id": str(entry.persona_id),
            "title": entry.title,
            "chunks": entry.chunks,
            "chars": entry.chars,
        }
