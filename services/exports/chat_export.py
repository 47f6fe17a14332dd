"""Chat export as a background job: the owner asks (`start`), a worker reads the whole conversation page by
page, renders it (JSON, TXT or PDF, services/exports/transcript.py) in a process of its own, and keeps the file as
the job's result (a signed link). Progress: reading 0-40 %, rendering 40-95 %, storing to 100 %."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from core.entities import Job, Message, Principal
from core.errors import NotFound
from services.exports import render_process, transcript
from services.jobs import JobFailed, JobKind, JobRun, JobService
from storage.chat import ChatStore
from storage.personas import PersonaStore
from storage.users import UserStore

ExportFormat = Literal["json", "txt", "pdf"]
KIND = "chat_export"
PAGE = 500


class ChatExports:
    def __init__(self, *, pool: asyncpg.Pool, jobs: JobService) -> None:
        self._pool = pool
        self._jobs = jobs
        self._chats = ChatStore()
        self._personas = PersonaStore()
        self._users = UserStore()

    def kind(self) -> JobKind:
        # Exports are what a person waits for: before broadcasts and ingestion.
        return JobKind(KIND, self.run, max_attempts=3, backoff_seconds=2.0, priority=10)

    async def start(self, user: Principal, session_id: UUID, fmt: ExportFormat) -> Job:
        """404 for a session that is not the user's; the job otherwise (202)."""
        async with self._pool.acquire() as conn:
            session = await self._chats.owned_session(conn, session_id=session_id, user_id=user.id)
        if session is None:
            raise NotFound("chat session not found")
        return await self._jobs.create(user.id, KIND, {"session_id": str(session_id), "format": fmt})

    async def run(self, run: JobRun) -> dict[str, Any]:
        session_id = UUID(run.params["session_id"])
        fmt: ExportFormat = run.params["format"]
        async with self._pool.acquire() as conn:
            session = await self._chats.owned_session(conn, session_id=session_id, user_id=run.user_id)
            if session is None:
                raise JobFailed("the chat was deleted")
            persona = await self._personas.get(conn, session.persona_id) if session.persona_id else None
            owner = await self._users.get(conn, run.user_id)
        messages = await self._read(run, session_id, session.last_seq)
        await run.progress(0.4, "rendering", force=True)
        exported_at = datetime.now(UTC)
        document = transcript.Transcript(
            session=session,
            messages=messages,
            persona_name=persona.name if persona else None,
            user_name=owner.display_name if owner else "You",
            exported_at=exported_at,
        )
        data = await self._render(run, fmt, document)
        await run.progress(0.95, "storing", force=True)
        await run.store_file(
            filename=transcript.filename(fmt, session.title, exported_at=exported_at),
            content_type=transcript.content_type(fmt),
            data=data,
        )
        return {"format": fmt, "session_id": str(session_id), "messages": len(messages)}

    async def _read(self, run: JobRun, session_id: UUID, last_seq: int) -> list[Message]:
        messages: list[Message] = []
        after = 0
        while True:
            async with self._pool.acquire() as conn:
                page = await self._chats.messages_after(conn, session_id=session_id, after_seq=after, limit=PAGE)
            messages.extend(page)
            if len(page) < PAGE:
                return messages
            after = page[-1].seq
            await run.progress(0.4 * min(1.0, after / max(1, last_seq)), f"reading messages ({len(messages)})")

    async def _render(self, run: JobRun, fmt: ExportFormat, document: transcript.Transcript) -> bytes:
        """In a process of its own (CPU work stays off the event loop and its GIL); a cancel kills it."""
        done = 0.0

        async def relay(fraction: float | None) -> None:
            nonlocal done
            if fraction is not None:
                done = fraction
            await run.progress(0.4 + 0.55 * done, f"rendering {fmt.upper()}")

        try:
            return await render_process.render(fmt, document, relay)
        except render_process.RenderFailed as err:
            raise RuntimeError(f"export rendering failed: {err}") from err
