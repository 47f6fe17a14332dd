"""KnowledgeService: a persona's knowledge base (text entries and TXT/Markdown/PDF files, split into
chunks by chunking.py, files read by extraction.py, a page or a batch of chunks at a time by ingest.py so that
a background job gets progress and can stop), the chunks most relevant to a message, and Character Card
import and export (a PNG card's picture becomes the persona's avatar; a PNG export is drawn on the avatar).

Knowledge is part of the persona's definition, its creator's asset: only the owner adds or deletes it (anyone
else: "not found"); others may list and read it only when the persona is public and remixable (a public one
that is not: 403 `forbidden`; a private one: "not found"). `relevant_chunks` checks nothing: the reply
service calls it for whoever chats with the persona, and only the chunks' text goes into the prompt."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from core.entities import KnowledgeDocument, KnowledgeEntry, Persona, PersonaDraft, Principal, StoredFile
from core.errors import AppError, Code, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from core.pages import Slice
from core.tasks import TaskSet
from services import character_cards as cards
from services.files.service import FilesService
from services.knowledge.chunking import Prepared, clean_text, prepare, query_words
from services.knowledge.extraction import (
    LARGE_FILE_BYTES,
    PDF,
    attachment_name,
    is_large_file,
    safe_filename,
    title_from_filename,
)
from services.knowledge.ingest import CHUNKED, Progress, Reporter, read_file
from services.personas import PersonaService
from storage.knowledge import KnowledgeStore

log = structlog.get_logger(__name__)
# Why a card's picture may not be kept: the persona is imported without it (see `import_card`).
_PICTURE_REFUSALS = frozenset({Code.STORAGE_LIMIT, Code.INVALID_FILE, Code.UNSUPPORTED_TYPE, Code.TOO_LARGE})


@dataclass(frozen=True)
class KnowledgeChunk:
    content: str
    rank: float


@dataclass(frozen=True)
class ImportedCard:
    persona: Persona
    knowledge_entries: int
    truncated: list[str]


@dataclass(frozen=True)
class ExportedCard:
    body: bytes
    content_type: str
    filename: str


class KnowledgeService:
    def __init__(
        self, *, pool: asyncpg.Pool, personas: PersonaService, files: FilesService, upload_max_bytes: int
    ) -> None:
        self._pool = pool
        self._personas = personas
        self._files = files
        self._upload_max_bytes = upload_max_bytes
        self._store = KnowledgeStore()
        # Undoing a stopped ingest runs on even if the task awaiting it is cancelled again.
        self._undoing = TaskSet()

    @property
    def upload_max_bytes(self) -> int:
        """The largest file (or JSON body) the knowledge and import endpoints take."""
        return self._upload_max_bytes

    # --- reads -----------------------------------------------------------------------------------

    async def list_entries(
        self, user: Principal, persona_id: UUID, *, before: tuple[datetime, UUID] | None, limit: int
    ) -> Slice[KnowledgeEntry]:
        """The persona's entries, newest first, for whoever may read its definition. `before` is the
        previous page's last (created_at, id)."""
        await self._personas.get_definition(user, persona_id)
        async with self._pool.acquire() as conn:
            rows = await self._store.list_entries(conn, persona_id, before=before, limit=limit + 1)
        return Slice(rows[:limit], len(rows) > limit)

    async def get_entry(self, user: Principal, persona_id: UUID, entry_id: UUID) -> KnowledgeDocument:
        """One entry with its text, for whoever may read the persona's definition."""
        await self._personas.get_definition(user, persona_id)
        async with self._pool.acquire() as conn:
            document = await self._store.get(conn, entry_id, persona_id=persona_id)
        if document is None:
            raise NotFound("knowledge entry not found")
        return document

    async def relevant_chunks(self, persona_id: UUID, query: str, *, limit: int = 5) -> list[KnowledgeChunk]:
        """The persona's chunks most relevant to `query` (a chat message), best first: full-text ranked
        (ts_rank_cd), matching on any significant word of the message, stemmed. Stop words alone or an
        empty message give []. No access check: the caller decides who may chat with the persona."""
        words = query_words(query)
        if not words or limit <= 0:
            return []
        async with self._pool.acquire() as conn:
            matches = await self._store.relevant(conn, persona_id, words=words, limit=limit)
        return [KnowledgeChunk(m.content, m.rank) for m in matches]

    # --- changes ---------------------------------------------------------------------------------

    async def add_text(self, user: Principal, persona_id: UUID, *, title: str, content: str) -> KnowledgeEntry:
        """A text entry (source "text"); owner only."""
        content = clean_text(content)
        if not content:
            raise ValidationFailed("content: empty", details=[{"field": "content", "message": "empty"}])
        prepared = await asyncio.to_thread(prepare, title, content)
        return await self._add(user.id, persona_id, prepared, source="text")

    async def add_stored_file(
        self, user: Principal, persona_id: UUID, file_id: UUID, *, title: str | None = None
    ) -> KnowledgeEntry:
        """One of the user's uploaded `knowledge_base` files (POST /files/upload) as knowledge, like a direct
        upload: 404 naming `file_id` for someone else's (or no) file, 422 for another category."""
        return await self.ingest_file(user_id=user.id, persona_id=persona_id, file_id=file_id, title=title)

    async def ingest_file(
        self,
        *,
        user_id: UUID,
        persona_id: UUID,
        file_id: UUID,
        title: str | None = None,
        progress: Progress | None = None,
    ) -> KnowledgeEntry:
        """`add_stored_file` for whoever has only the user's id (a background job), reporting progress.

        Checked before the file is read, as for a request: the persona is the user's (else 404 "persona not
        found"), the file is theirs (else 404 naming `file_id`) and a `knowledge_base` one (else 422); then
        the 413/415/422 of `add_file`. Nothing is reported before these checks pass.

        `progress(fraction, step)` is awaited on the event loop: "reading the file" at 0, then "page i of n"
        for each page of a PDF (each read in a worker thread) or "read the text", "chunking: k chunks" up to
        0.9, "storing k chunks", and 1.0 "stored" once the entry is committed.

        To stop it, cancel the task: the coroutine is back on the event loop between pages and between
        batches of chunks, so the cancel lands within one page's work (the page being read finishes in its
        thread and is dropped). All or nothing: the entry and its chunks are stored in one transaction at the
        end, and when this raises after storing began (a cancel, or an error from `progress`), what was
        committed is deleted before the exception goes on. Raising means nothing was added."""
        stored = await self.checked_file(user_id=user_id, persona_id=persona_id, file_id=file_id)
        report = Reporter(progress)
        await report(0.0, "reading the file")
        data = await self._files.read_bytes(stored)
        return await self._ingest(user_id, persona_id, data=data, filename=stored.filename, title=title, report=report)

    async def checked_file(self, *, user_id: UUID, persona_id: UUID, file_id: UUID) -> StoredFile:
        """The file `ingest_file` would add, after its checks (404 persona, 404 `file_id`, 422 category, 413
        size): what a request checks before it queues the ingestion as a job."""
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user_id):
                raise NotFound("persona not found")
        stored = await self._owned_file(user_id, file_id)
        if stored.category != "knowledge_base":
            raise ValidationFailed(
                f"file_id: a {stored.category} file; upload it with category knowledge_base",
                details=[{"field": "file_id", "message": "not a knowledge_base file"}],
            )
        if stored.size > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")
        return stored

    async def _owned_file(self, user_id: UUID, file_id: UUID) -> StoredFile:
        """The user's file, or the 404 naming `file_id` that FilesService.owned gives for a Principal."""
        found = await self._files.attached(user_id, [file_id])
        if not found:
            raise NotFound("file_id: file not found", details=[{"field": "file_id", "message": f"no file {file_id}"}])
        return found[0]

    async def is_large(self, stored: StoredFile) -> bool:
        """Whether adding this file to a knowledge base is long work, for a background job rather than a
        request: more than LARGE_FILE_BYTES (decided from the row alone), or a PDF of more than
        LARGE_PDF_PAGES pages (its bytes read, at most LARGE_FILE_BYTES, and its page tree counted in a
        worker thread: milliseconds). No access check: pass a file already found for its user."""
        if stored.size > LARGE_FILE_BYTES:
            return True
        if stored.content_type != PDF:
            return False
        data = await self._files.read_bytes(stored)
        return await asyncio.to_thread(is_large_file, data)

    async def add_file(
        self, user: Principal, persona_id: UUID, *, data: bytes, filename: str | None, title: str | None = None
    ) -> KnowledgeEntry:
        """An uploaded TXT, Markdown or PDF file's text (source "file"), typed by its content; owner only.
        413 over `upload_max_bytes`, 415 for other kinds of file, 422 for a PDF that cannot be read or a
        file without text."""
        if len(data) > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")
        # The owner check comes first, so nobody else can make us parse a PDF for them.
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user.id):
                raise NotFound("persona not found")
        return await self._ingest(user.id, persona_id, data=data, filename=filename, title=title, report=Reporter(None))

    async def _ingest(
        self,
        owner_id: UUID,
        persona_id: UUID,
        *,
        data: bytes,
        filename: str | None,
        title: str | None,
        report: Reporter,
    ) -> KnowledgeEntry:
        """A file's entry, once its owner and size were checked: read, chunked and stored all or nothing."""
        filename = safe_filename(filename)
        content_type, prepared = await read_file(data, filename, title or title_from_filename(filename), report)
        await report(CHUNKED, f"storing {len(prepared.chunks)} chunks")
        # The transaction runs in its own task, shielded: a cancel never cuts it off half-way (which would
        # leave the connection to be reset); it is undone once it has ended instead.
        storing = asyncio.ensure_future(
            self._add(owner_id, persona_id, prepared, source="file", filename=filename, content_type=content_type)
        )
        try:
            entry = await asyncio.shield(storing)
            await report(1.0, "stored")
        except BaseException:
            await asyncio.shield(self._undoing.spawn(self._undo(storing, persona_id)))
            raise
        return entry

    async def _undo(self, storing: asyncio.Future[KnowledgeEntry], persona_id: UUID) -> None:
        """Deletes the entry `storing` committed, once it has ended (nothing to do when it failed)."""
        await asyncio.wait([storing])
        if storing.cancelled() or storing.exception() is not None:
            return
        entry = storing.result()
        try:
            async with self._pool.acquire() as conn:
                await self._store.delete(conn, entry.id, persona_id=persona_id)
        except (asyncpg.PostgresError, OSError):  # the owner can still delete it by hand
            log.error("could not delete the entry of a stopped knowledge ingest", entry_id=str(entry.id))
            return
        log.info("stopped knowledge ingest undone", persona_id=str(persona_id), entry_id=str(entry.id))

    async def _add(
        self,
        owner_id: UUID,
        persona_id: UUID,
        prepared: Prepared,
        *,
        source: str,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> KnowledgeEntry:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._store.lock_owned_persona(conn, persona_id, owner_id=owner_id):
                raise NotFound("persona not found")
            entry = await self._store.insert(
                conn,
                persona_id=persona_id,
                title=prepared.title,
                source=source,
                content=prepared.content,
                chunks=prepared.chunks,
                filename=filename,
                content_type=content_type,
                keys=prepared.keys,
            )
        log.info("knowledge added", persona_id=str(persona_id), entry_id=str(entry.id), chunks=entry.chunks)
        return entry

    async def delete_entry(self, user: Principal, persona_id: UUID, entry_id: UUID) -> None:
        """Owner only; the entry's chunks go with it."""
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user.id):
                raise NotFound("persona not found")
            if not await self._store.delete(conn, entry_id, persona_id=persona_id):
                raise NotFound("knowledge entry not found")

    # --- Character Cards -------------------------------------------------------------------------

    async def import_card(self, user: Principal, data: bytes) -> ImportedCard:
        """A new private persona of the user's from a Character Card (PNG or JSON, V1/V2/V3), with its
        enabled character book entries as knowledge (source "character_book"), all in one transaction.
        Counts against the plan (403 `plan_limit`).

        A PNG card's picture becomes the persona's avatar: stored first as the user's `persona_image` file,
        processed like any upload and counted against their storage. When it cannot be kept (storage full,
        or pixels that are not a valid image) the persona is imported without it and `truncated` lists
        `avatar`: the card's text is what the import is for and costs no storage, and the user can free
        space and set a picture later. Should the persona not be made after all, the file goes again."""
        if len(data) > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")

        def parse() -> tuple[cards.Card, cards.PersonaFields, list[Prepared]]:
            card = cards.read_card(data, max_text_bytes=4 * self._upload_max_bytes)
            fields = cards.persona_fields(card)
            knowledge = [prepare(e.title, clean_text(e.content), e.keys) for e in fields.knowledge]
            return card, fields, [k for k in knowledge if k.content]

        try:
            card, fields, knowledge = await asyncio.to_thread(parse)
        except cards.CardError as err:
            details = [{"field": err.field, "message": err.message}]
            if err.unsupported:
                raise UnsupportedMediaType(f"{err.field}: {err.message}", details=details) from err
            raise ValidationFailed(f"{err.field}: {err.message}", details=details) from err
        truncated = list(fields.truncated)
        picture: StoredFile | None = None
        if data.startswith(cards.PNG_SIGNATURE):
            await self._personas.check_slot(user)  # no picture stored for an import the plan refuses
            picture = await self._keep_picture(user, data, attachment_name(fields.name, "png"))
            if picture is None:
                truncated.append("avatar")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                draft = PersonaDraft(
                    name=fields.name,
                    description=fields.description,
                    personality=fields.personality,
                    greeting=fields.greeting,
                    alternate_greetings=fields.alternate_greetings,
                    tags=fields.tags,
                )
                persona = await self._personas.create_in(
                    conn, user, draft, avatar_file_id=picture.id if picture is not None else None
                )
                for prepared in knowledge:
                    await self._store.insert(
                        conn,
                        persona_id=persona.id,
                        title=prepared.title,
                        source="character_book",
                        content=prepared.content,
                        chunks=prepared.chunks,
                        keys=prepared.keys,
                    )
        except BaseException:
            if picture is not None:
                await self._drop_picture(user, picture)
            raise
        log.info("character card imported", persona_id=str(persona.id), spec=card.spec, knowledge=len(knowledge))
        return ImportedCard(persona, len(knowledge), truncated)

    async def _keep_picture(self, user: Principal, data: bytes, filename: str) -> StoredFile | None:
        """The card's PNG stored as the user's picture (its text chunks, the card, are stripped like any
        upload's metadata); None when it cannot be kept for a reason of its own."""
        try:
            return await self._files.store_bytes(user, category="persona_image", filename=filename, data=data)
        except AppError as err:
            if err.code not in _PICTURE_REFUSALS:
                raise
            log.info("character card picture not kept", reason=err.code)
            return None

    async def _drop_picture(self, user: Principal, picture: StoredFile) -> None:
        try:
            await self._files.delete(user, picture.id)
        except (AppError, asyncpg.PostgresError, OSError):  # it stays one of the user's files, to delete by hand
            log.warning("could not delete the picture of a failed card import", file_id=str(picture.id))

    async def export_card(self, user: Principal, persona_id: UUID, *, fmt: str) -> ExportedCard:
        """The persona as a Character Card: V2 JSON (`fmt` "json"), or a PNG (`fmt` "png": the avatar, or a
        placeholder portrait when there is none) carrying V2 in a `chara` chunk and V3 in a `ccv3` one, with
        the knowledge base as the card's character book. A card is the whole definition: only for whoever may
        read it (owner, or anyone when public and remixable)."""
        persona = await self._personas.get_definition(user, persona_id)
        async with self._pool.acquire() as conn:
            documents = await self._store.documents(conn, persona.id)
        card = cards.card_for_persona(
            name=persona.name,
            description=persona.description,
            personality=persona.personality,
            greeting=persona.greeting,
            alternate_greetings=persona.alternate_greetings,
            tags=persona.tags,
            book=[cards.BookEntry(d.entry.title, tuple(d.entry.keys), d.content) for d in documents],
            extensions={"parlor": {"persona_id": str(persona.id)}},
        )
        if fmt == "png":
            picture = await self._picture(persona)
            body = await asyncio.to_thread(
                cards.card_png,
                card,
                seed=persona.id.bytes,
                created=persona.created_at,
                modified=persona.updated_at,
                picture=picture,
            )
            return ExportedCard(body, "image/png", attachment_name(persona.name, "png"))
        body = await asyncio.to_thread(lambda: json.dumps(cards.to_v2(card), ensure_ascii=False, indent=2).encode())
        return ExportedCard(body, "application/json", attachment_name(persona.name, "json"))

    async def _picture(self, persona: Persona) -> bytes | None:
        """The avatar's bytes for a PNG export; None (the placeholder) when it has none or its bytes are lost."""
        stored = await self._personas.avatar_of(persona)
        if stored is None:
            return None
        try:
            return await self._files.read_bytes(stored)
        except NotFound:  # logged where it was found missing
            return None
