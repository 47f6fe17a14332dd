"""KnowledgeService.ingest_file, the path a background job takes: a PDF read page by page in worker threads
with progress, a text file chunked with progress, a cancel (or a failing progress reporter) at any point
leaving nothing stored, the same refusals as the request path, and which files count as large. Real
PostgreSQL, files uploaded through the API; no mocks."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.entities import StoredFile
from core.errors import AppError
from handlers.keys import FILES_SERVICE, KNOWLEDGE_SERVICE
from server.config import Settings
from services.knowledge import LARGE_FILE_BYTES, LARGE_PDF_PAGES, KnowledgeService, is_large_file, split_into_chunks
from services.knowledge.extraction import PdfPages
from tests.fixtures.files import make_pdf
from tests.helpers import bearer, make_persona, register, wait_until

PAGES = 12


def word() -> str:
    """A word no other test uses, letters only so the full-text parser keeps it whole."""
    return "zq" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


def pdf_with_words(words: list[str]) -> bytes:
    """One page per word, each page a few lines of text around its word."""
    return make_pdf(
        [f"Page {i + 1} is about the {w} archive.\nThe {w} shelves hold old maps." for i, w in enumerate(words)]
    )


class Recorder:
    """A progress reporter that keeps every call; `on_step` runs (awaited) after a call is recorded."""

    def __init__(self, on_step: Callable[[float, str], Awaitable[None]] | None = None) -> None:
        self.calls: list[tuple[float, str]] = []
        self._on_step = on_step

    async def __call__(self, fraction: float, step: str) -> None:
        self.calls.append((fraction, step))
        if self._on_step is not None:
            await self._on_step(fraction, step)

    @property
    def steps(self) -> list[str]:
        return [step for _, step in self.calls]

    def assert_well_formed(self) -> None:
        fractions = [fraction for fraction, _ in self.calls]
        assert fractions == sorted(fractions), self.calls
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert self.calls[0] == (0.0, "reading the file")
        assert self.calls[-1] == (1.0, "stored")


def user_id(session: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(session["user"]["id"])


async def upload(
    client: TestClient, session: dict[str, Any], data: bytes, filename: str, category: str = "knowledge_base"
) -> uuid.UUID:
    form = aiohttp.FormData()
    form.add_field("category", category)
    form.add_field("file", io.BytesIO(data), filename=filename, content_type="application/octet-stream")
    resp = await client.post("/api/v1/files/upload", data=form, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return uuid.UUID((await resp.json())["id"])


async def stored_file(client: TestClient, owner: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
    (stored,) = await client.app[FILES_SERVICE].attached(owner, [file_id])
    return stored


async def counts(settings: Settings, persona_id: uuid.UUID) -> tuple[int, int]:
    """(entries, chunks) of the persona, read on a connection of our own."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        entries = await conn.fetchval("SELECT count(*) FROM knowledge_entries WHERE persona_id = $1", persona_id)
        chunks = await conn.fetchval("SELECT count(*) FROM knowledge_chunks WHERE persona_id = $1", persona_id)
    finally:
        await conn.close()
    return int(entries), int(chunks)


async def setup(client: TestClient, data: bytes, filename: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(user id, persona id, file id): a new user with a persona and `data` uploaded as a knowledge file."""
    session = await register(client)
    persona = await make_persona(client, session)
    file_id = await upload(client, session, data, filename)
    return user_id(session), uuid.UUID(persona["id"]), file_id


def knowledge(client: TestClient) -> KnowledgeService:
    return client.app[KNOWLEDGE_SERVICE]


# --- progress ------------------------------------------------------------------------------------


async def test_a_pdf_is_read_page_by_page_off_the_loop_with_progress(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [word() for _ in range(PAGES)]
    owner, persona_id, file_id = await setup(client, pdf_with_words(words), "atlas.pdf")
    threads: list[threading.Thread] = []
    read_next = PdfPages.read_next

    def spy(self: PdfPages) -> None:
        threads.append(threading.current_thread())
        read_next(self)

    monkeypatch.setattr(PdfPages, "read_next", spy)
    committed_at_the_end: list[tuple[int, int]] = []

    async def at_the_end(fraction: float, step: str) -> None:
        if fraction == 1.0:
            committed_at_the_end.append(await counts(settings, persona_id))

    progress = Recorder(at_the_end)
    entry = await knowledge(client).ingest_file(
        user_id=owner, persona_id=persona_id, file_id=file_id, progress=progress
    )

    progress.assert_well_formed()
    pages = [s for s in progress.steps if s.startswith("page ")]
    assert pages == [f"page {i} of {PAGES}" for i in range(1, PAGES + 1)]
    assert progress.steps[-2] == f"storing {entry.chunks} chunks"
    # Every page was read in a worker thread, never on the loop's.
    assert len(threads) == PAGES and threading.main_thread() not in threads
    # 1.0 comes once the entry is committed: another connection already sees it.
    assert committed_at_the_end == [(1, entry.chunks)]

    assert (entry.source, entry.filename, entry.content_type, entry.title) == (
        "file",
        "atlas.pdf",
        "application/pdf",
        "atlas",
    )
    # Each page's word finds its chunk, as for an upload through the API.
    for w in words:
        found = await knowledge(client).relevant_chunks(persona_id, f"where is the {w}?")
        assert found and w in found[0].content


async def test_a_text_file_reports_progress_by_chunks(client: TestClient, settings: Settings) -> None:
    term = word()
    text = "\n\n".join(
        f"Paragraph {p} of the {term} chronicle tells of the river and its keepers. " * 4 for p in range(600)
    )
    owner, persona_id, file_id = await setup(client, text.encode(), "chronicle.md")
    progress = Recorder()
    entry = await knowledge(client).ingest_file(
        user_id=owner, persona_id=persona_id, file_id=file_id, title="Chronicle", progress=progress
    )

    progress.assert_well_formed()
    assert progress.steps[1] == "read the text"
    chunked = [int(s.split()[1]) for s in progress.steps if s.startswith("chunking: ")]
    assert len(chunked) > 3 and chunked == sorted(chunked) and chunked[-1] == entry.chunks
    assert entry.chunks == len(split_into_chunks(text)) and entry.content_type == "text/markdown"
    assert entry.title == "Chronicle" and await counts(settings, persona_id) == (1, entry.chunks)
    assert await knowledge(client).relevant_chunks(persona_id, f"{term} keepers")


# --- stopping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["reporting page 3", "reading page 4"])
async def test_a_cancel_between_pages_stores_nothing(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    owner, persona_id, file_id = await setup(client, pdf_with_words([word() for _ in range(PAGES)]), "a.pdf")
    loop = asyncio.get_running_loop()
    reached = asyncio.Event()
    finished_in_thread: list[int] = []
    read_next = PdfPages.read_next

    def slow_page_4(self: PdfPages) -> None:
        if where == "reading page 4" and self.read == 3:
            loop.call_soon_threadsafe(reached.set)
            time.sleep(0.3)  # the cancel comes while this page is being read
        read_next(self)
        finished_in_thread.append(self.read)

    async def watch(fraction: float, step: str) -> None:
        if where == "reporting page 3" and step == f"page 3 of {PAGES}":
            reached.set()
            await asyncio.sleep(30)  # the cancel comes while the reporter is awaited

    monkeypatch.setattr(PdfPages, "read_next", slow_page_4)
    progress = Recorder(watch)
    task = asyncio.create_task(
        knowledge(client).ingest_file(user_id=owner, persona_id=persona_id, file_id=file_id, progress=progress)
    )
    await asyncio.wait_for(reached.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert progress.steps[-1] == f"page 3 of {PAGES}"
    assert await counts(settings, persona_id) == (0, 0)
    # A page being read when the cancel came finishes in its thread, and its text is dropped.
    await wait_until(lambda: len(finished_in_thread) == (4 if where == "reading page 4" else 3))
    assert await counts(settings, persona_id) == (0, 0)

    # Nothing was left locked or half-done: the same file goes in whole afterwards.
    monkeypatch.undo()
    entry = await knowledge(client).ingest_file(user_id=owner, persona_id=persona_id, file_id=file_id)
    assert await counts(settings, persona_id) == (1, entry.chunks)


@pytest.mark.parametrize("at", ["storing", "stored"])
async def test_a_cancel_while_storing_or_after_the_commit_stores_nothing(
    client: TestClient, settings: Settings, at: str
) -> None:
    owner, persona_id, file_id = await setup(client, pdf_with_words([word() for _ in range(3)]), "b.pdf")
    reached = asyncio.Event()

    async def hold(fraction: float, step: str) -> None:
        if step.startswith(at):
            reached.set()
            if at == "stored":
                await asyncio.sleep(30)  # a slow reporter: the cancel lands here, after the commit

    task = asyncio.create_task(
        knowledge(client).ingest_file(user_id=owner, persona_id=persona_id, file_id=file_id, progress=Recorder(hold))
    )
    await asyncio.wait_for(reached.wait(), 10)
    if at == "stored":
        assert await counts(settings, persona_id) != (0, 0)  # committed, then taken back below
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await counts(settings, persona_id) == (0, 0)


async def test_a_failing_reporter_after_the_commit_stores_nothing(client: TestClient, settings: Settings) -> None:
    owner, persona_id, file_id = await setup(client, b"A short note about lanterns.\n", "note.txt")

    async def broken(fraction: float, step: str) -> None:
        if fraction == 1.0:
            raise RuntimeError("progress store unavailable")

    with pytest.raises(RuntimeError, match="progress store unavailable"):
        await knowledge(client).ingest_file(
            user_id=owner, persona_id=persona_id, file_id=file_id, progress=Recorder(broken)
        )
    assert await counts(settings, persona_id) == (0, 0)


# --- refusals ---------------------------------------------------------------------------------------


async def test_someone_elses_file_or_persona_is_refused_before_anything_is_read(
    client: TestClient, settings: Settings
) -> None:
    alice, bob = await register(client), await register(client)
    alice_id, bob_id = user_id(alice), user_id(bob)
    alices = uuid.UUID((await make_persona(client, alice))["id"])
    bobs = uuid.UUID((await make_persona(client, bob))["id"])
    alices_file = await upload(client, alice, make_pdf(["Alice's secret page."]), "secret.pdf")
    bobs_file = await upload(client, bob, b"Bob's notes.\n", "bob.txt")
    chat_file = await upload(client, alice, b"a chat file\n", "c.txt", category="chat_attachment")
    progress = Recorder()

    async def refused(owner: uuid.UUID, persona_id: uuid.UUID, file_id: uuid.UUID) -> AppError:
        with pytest.raises(AppError) as caught:
            await knowledge(client).ingest_file(
                user_id=owner, persona_id=persona_id, file_id=file_id, progress=progress
            )
        return caught.value

    # Another user's persona: "not found", as POST /personas/{id}/knowledge answers.
    err = await refused(alice_id, bobs, alices_file)
    assert (err.status, err.message) == (404, "persona not found")
    # Another user's file (or none): 404 naming file_id.
    for file_id in (bobs_file, uuid.uuid4()):
        err = await refused(alice_id, alices, file_id)
        assert err.status == 404 and err.details[0]["field"] == "file_id"
    # Someone using Alice's file for their own persona: the file is not theirs.
    err = await refused(bob_id, bobs, alices_file)
    assert err.status == 404 and err.details[0]["field"] == "file_id"
    # A file of another category: 422.
    err = await refused(alice_id, alices, chat_file)
    assert err.status == 422 and err.details[0]["field"] == "file_id"
    assert progress.calls == []  # refused before any reading
    assert await counts(settings, alices) == (0, 0) and await counts(settings, bobs) == (0, 0)


async def test_a_damaged_pdf_is_refused_and_stores_nothing(client: TestClient, settings: Settings) -> None:
    owner, persona_id, file_id = await setup(client, b"%PDF-1.4\n" + b"\x00garbage" * 50, "broken.pdf")
    progress = Recorder()
    with pytest.raises(AppError) as caught:
        await knowledge(client).ingest_file(user_id=owner, persona_id=persona_id, file_id=file_id, progress=progress)
    assert caught.value.status == 422 and "could not be read" in caught.value.message
    assert progress.steps == ["reading the file"]
    assert await counts(settings, persona_id) == (0, 0)


# --- large files -------------------------------------------------------------------------------------


async def test_which_files_are_large(client: TestClient) -> None:
    session = await register(client)
    owner = user_id(session)
    service = knowledge(client)

    async def large(data: bytes, filename: str) -> bool:
        stored = await stored_file(client, owner, await upload(client, session, data, filename))
        assert await service.is_large(stored) == is_large_file(data)  # the row and the bytes agree
        return await service.is_large(stored)

    assert not await large(b"A few notes.\n", "small.txt")
    assert not await large(b"Many lines of notes.\n" * (LARGE_FILE_BYTES // 21), "just-under.txt")
    assert await large(b"Many lines of notes.\n" * (LARGE_FILE_BYTES // 21 + 1), "just-over.txt")
    # A PDF counts by pages, whatever its bytes: these are a few KB each.
    assert not await large(make_pdf([f"Page {i}." for i in range(LARGE_PDF_PAGES)]), "20.pdf")
    assert await large(make_pdf([f"Page {i}." for i in range(LARGE_PDF_PAGES + 1)]), "21.pdf")
    # An unreadable PDF is not large: the request path refuses it at once.
    assert not is_large_file(b"%PDF-1.4\n" + b"\x00garbage" * 50)
