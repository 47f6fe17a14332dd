"""KnowledgeService: a persona's knowledge base (text entries and TXT/Markdown/PDF files, split into
chunks by chunking.py, files read by extraction.py), the chunks most relevant to a message, and
Character Card import and export (a PNG card's picture becomes the persona's avatar; a PNG export is drawn
on the avatar).

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
from services import character_cards as cards
from services.files.service import FilesService
from services.knowledge.chunking import Prepared, clean_text, prepare, query_words
from services.knowledge.extraction import attachment_name, extract_file_text, safe_filename, title_from_filename
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
        return await self._add(user, persona_id, prepared, source="text")

    async def add_stored_file(
        self, user: Principal, persona_id: UUID, file_id: UUID, *, title: str | None = None
    ) -> KnowledgeEntry:
        """One of the user's uploaded `knowledge_base` files (POST /files/upload) as knowledge, like a direct
        upload: 404 naming `file_id` for someone else's (or no) file, 422 for another category."""
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user.id):
                raise NotFound("persona not found")
        (stored,) = await self._files.owned(user, [file_id], field="file_id")
        if stored.category != "knowledge_base":
            raise ValidationFailed(
                f"file_id: a {stored.category} file; upload it with category knowledge_base",
                details=[{"field": "file_id", "message": "not a knowledge_base file"}],
            )
        data = await self._files.read_bytes(stored)
        return await self.add_file(user, persona_id, data=data, filename=stored.filename, title=title)

    async def add_file(
        self, user: Principal, persona_id: UUID, *, data: bytes, filename: str | None, title: str | None = None
    ) -> KnowledgeEntry:
        """An uploaded TXT, Markdown or PDF file's text (source "file"), typed by its content; owner only.
        413 over `upload_max_bytes`, 415 for other kinds of file, 422 for a PDF that cannot be read or a
        file without text."""
        if len(data) > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")
        filename = safe_filename(filename)
        # The owner check comes first, so nobody else can make us parse a PDF for them.
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user.id):
                raise NotFound("persona not found")

        def work() -> tuple[str, Prepared]:
            content_type, text = extract_file_text(data, filename)
            return content_type, prepare(title or title_from_filename(filename), text)

        content_type, prepared = await asyncio.to_thread(work)
        return await self._add(user, persona_id, prepared, source="file", filename=filename, content_type=content_type)

    async def _add(
        self,
        user: Principal,
        persona_id: UUID,
        prepared: Prepared,
        *,
        source: str,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> KnowledgeEntry:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._store.lock_owned_persona(conn, persona_id, owner_id=user.id):
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
