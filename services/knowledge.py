"""KnowledgeService: a persona's knowledge base (text entries and TXT/Markdown/PDF files, split into
chunks), the chunks most relevant to a message, and Character Card import and export.

Knowledge is part of the persona's definition, its creator's asset: only the owner adds or deletes it (anyone
else: "not found"); others may list and read it only when the persona is public and remixable (a public one
that is not: 403 `forbidden`; a private one: "not found"). `relevant_chunks` checks nothing: the reply
service calls it for whoever chats with the persona, and only the chunks' text goes into the prompt."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from core.entities import Principal
from core.errors import AppError, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from services import character_cards as cards
from services.personas import PersonaService, Slice
from storage.knowledge import KnowledgeDocument, KnowledgeEntryRow, KnowledgeStore
from storage.personas import PersonaRow

log = structlog.get_logger(__name__)

# Chunks of about CHUNK_MIN..CHUNK_MAX characters, cut between paragraphs where possible, else between
# sentences; each starts with up to OVERLAP characters of the previous one, so a fact cut in two is whole
# in one of them. Text is cut into units (sentences, long ones split at words) of at most UNIT_MAX, which
# keeps every chunk but the last within the bounds.
CHUNK_MIN = 800
CHUNK_TARGET = 1000
CHUNK_MAX = 1200
UNIT_MAX = 400
OVERLAP = 200
# The most text one entry may hold: what the JSON form accepts, and what a file may turn into.
TEXT_MAX_CHARS = 200_000
FILE_MAX_CHARS = 2_000_000
# A PDF whose text takes longer than this to extract (huge, or built to be slow) is refused.
PDF_MAX_SECONDS = 30
# A chat message is searched by at most this many distinct words.
QUERY_MAX_WORDS = 64

PDF = "application/pdf"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# Between sentences (after . ! ? … and whitespace, or after CJK full stops), and at line breaks.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[\u3002\uff01\uff1f])\s*|\s*\n\s*")
_WORD = re.compile(r"\w+")
_MARKDOWN = re.compile(r"^(#{1,6} \S|```|[-*+] \S|\d+\. \S|> \S)|\[[^\]\n]+\]\([^)\s]+\)|\*\*\S", re.MULTILINE)
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f]")
_BINARY_KINDS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/ODF document)"),
    (b"RIFF", "a RIFF file (WAV/WebP)"),
)


@dataclass(frozen=True)
class KnowledgeChunk:
    content: str
    rank: float


@dataclass(frozen=True)
class ImportedCard:
    persona: PersonaRow
    knowledge_entries: int
    truncated: list[str]


@dataclass(frozen=True)
class ExportedCard:
    body: bytes
    content_type: str
    filename: str


@dataclass(frozen=True)
class _Prepared:
    """An entry ready to store: its text and chunks."""

    title: str
    content: str
    chunks: list[str]
    keys: tuple[str, ...] = ()


# --- text ---------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Newlines unified, NUL dropped and lone surrogates replaced (PostgreSQL text holds neither), trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8").strip()


def _units(text: str) -> list[tuple[str, str]]:
    """(separator before it, text) pieces of at most UNIT_MAX characters: sentences, and parts of longer
    ones. The separator is what stood between them: a paragraph break, a line break, a space or nothing."""
    units: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        separator = "\n\n"
        position = 0
        sentences: list[tuple[str, str]] = []
        for match in _SENTENCE_BREAK.finditer(paragraph):
            gap = match.group()
            sentences.append((paragraph[position : match.start()], "\n" if "\n" in gap else " " if gap else ""))
            position = match.end()
        sentences.append((paragraph[position:], ""))
        for sentence, after in sentences:
            sentence = sentence.strip()
            if not sentence:
                continue
            for part, joiner in _split_long(sentence):
                units.append((separator, part))
                separator = joiner
            separator = after
    return units


def _split_long(sentence: str) -> list[tuple[str, str]]:
    """A sentence in parts of at most UNIT_MAX characters, cut at a space when there is one; each with
    the separator that goes before the next part."""
    parts: list[tuple[str, str]] = []
    while len(sentence) > UNIT_MAX:
        cut = sentence.rfind(" ", UNIT_MAX // 2, UNIT_MAX + 1)
        if cut == -1:
            parts.append((sentence[:UNIT_MAX], ""))
            sentence = sentence[UNIT_MAX:]
        else:
            parts.append((sentence[:cut].rstrip(), " "))
            sentence = sentence[cut + 1 :].lstrip()
    parts.append((sentence, ""))
    return parts


def _joined(units: Sequence[tuple[str, str]]) -> str:
    return "".join(text if i == 0 else separator + text for i, (separator, text) in enumerate(units))


def _overlap(units: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The end of a chunk to repeat at the start of the next: its last whole sentences within OVERLAP
    characters, else the last words of its last sentence."""
    kept: list[tuple[str, str]] = []
    size = 0
    for separator, text in reversed(units):
        if size + len(text) + len(separator) > OVERLAP:
            break
        kept.insert(0, (separator, text))
        size += len(text) + len(separator)
    if kept:
        return kept
    separator, text = units[-1]
    cut = text.find(" ", len(text) - OVERLAP * 3 // 4)
    return [(separator, text[cut + 1 :])] if cut != -1 else []


def split_into_chunks(text: str) -> list[str]:
    """Chunks of about CHUNK_MIN..CHUNK_MAX characters (the last may be shorter), cut at a paragraph
    break once past CHUNK_MIN when one comes, else between sentences; each starts with the previous
    one's last sentence (or words)."""
    chunks: list[str] = []
    current: list[tuple[str, str]] = []
    size = 0
    for separator, unit in _units(text):
        grown = size + len(separator) + len(unit) if current else len(unit)
        paragraph = separator == "\n\n"
        if current and (grown > CHUNK_MAX or (paragraph and size >= CHUNK_MIN and grown > CHUNK_TARGET)):
            chunks.append(_joined(current))
            current = _overlap(current)
            size = len(_joined(current))
            if current and size + len(separator) + len(unit) > CHUNK_MAX:
                current, size = [], 0
            grown = size + len(separator) + len(unit) if current else len(unit)
        current.append((separator, unit))
        size = grown
    if current:
        chunks.append(_joined(current))
    return chunks


def _with_keys(chunks: list[str], keys: Sequence[str]) -> list[str]:
    """A character book entry's chunks start with its keys, so a message naming a key finds it."""
    if not keys:
        return chunks
    prefix = "Keys: " + ", ".join(keys) + "\n"
    return [prefix + chunk for chunk in chunks]


def _prepare(title: str, content: str, keys: Sequence[str] = ()) -> _Prepared:
    return _Prepared(title, content, _with_keys(split_into_chunks(content), keys), tuple(keys))


def query_words(query: str) -> list[str]:
    """The distinct words of a message (at most QUERY_MAX_WORDS), lowercased, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
        if len(seen) >= QUERY_MAX_WORDS:
            break
    return list(seen)


# --- files --------------------------------------------------------------------------------------------


def _pdf_text(data: bytes) -> str:
    """The text of every page, pages separated by blank lines. CPU work: run it off the event loop."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # many "encrypted" PDFs only restrict printing and copying
            except Exception:  # noqa: BLE001 - an unknown cipher is as unreadable as a password
                opened = False
            if not opened:
                raise ValidationFailed(
                    "file: the PDF is password-protected; upload an unprotected copy",
                    details=[{"field": "file", "message": "encrypted PDF"}],
                )
        pages: list[str] = []
        size = 0
        deadline = time.monotonic() + PDF_MAX_SECONDS
        for page in reader.pages:
            if time.monotonic() > deadline:
                raise ValidationFailed(
                    f"file: reading the PDF took longer than {PDF_MAX_SECONDS} seconds; upload its text instead",
                    details=[{"field": "file", "message": "PDF too slow to read"}],
                )
            text = page.extract_text() or ""
            size += len(text)
            if size > FILE_MAX_CHARS:
                raise _too_much_text()
            pages.append(text)
    except AppError:
        raise
    except Exception as err:  # pypdf raises many kinds of errors on malformed files
        raise ValidationFailed(
            "file: the PDF could not be read (it may be damaged)",
            details=[{"field": "file", "message": f"unreadable PDF ({type(err).__name__})"}],
        ) from err
    return "\n\n".join(pages)


def _too_much_text() -> ValidationFailed:
    return ValidationFailed(
        f"file: more than {FILE_MAX_CHARS} characters of text; split it into several files",
        details=[{"field": "file", "message": "too much text"}],
    )


def _unsupported(what: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"file: {what} is not supported; upload a TXT, Markdown or PDF file",
        details=[{"field": "file", "message": "unsupported file type"}],
    )


def _decode_text(data: bytes) -> str:
    """Text from UTF-8 (or UTF-16 with a byte order mark), or 415 for anything that is not text."""
    for magic, what in _BINARY_KINDS:
        if data.startswith(magic):
            raise _unsupported(what)
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _unsupported("a binary file (not UTF-8 text)") from err
    sample = text[:65536]
    if "\x00" in text or len(_CONTROL.findall(sample)) > max(4, len(sample) // 100):
        raise _unsupported("a binary file (not text)")
    return text


def extract_file_text(data: bytes, filename: str | None) -> tuple[str, str]:
    """(content type, text) of an uploaded file, decided from its content: PDF by its `%PDF-` header,
    otherwise UTF-8 text (Markdown when named .md/.markdown or written in Markdown). CPU work."""
    if data.startswith(b"%PDF-"):
        content_type, text = PDF, _pdf_text(data)
    else:
        text = _decode_text(data)
        named_md = (filename or "").lower().endswith((".md", ".markdown"))
        content_type = MARKDOWN if named_md or _MARKDOWN.search(text[:65536]) else PLAIN
    text = clean_text(text)
    if len(text) > FILE_MAX_CHARS:
        raise _too_much_text()
    if not text:
        raise ValidationFailed(
            "file: no text found in the file" + (" (a scanned PDF has only images)" if content_type == PDF else ""),
            details=[{"field": "file", "message": "no text"}],
        )
    return content_type, text


def _safe_filename(filename: str | None) -> str | None:
    """The name without any folder, control characters or NUL, at most 255 characters."""
    if not filename:
        return None
    name = re.split(r"[/\\]", filename)[-1]
    name = clean_text(_CONTROL.sub("", name.replace("\n", " ").replace("\t", " ")))[:255]
    return name or None


def _title_from_filename(filename: str | None) -> str:
    if not filename:
        return "Untitled"
    stem = filename.rsplit(".", 1)[0] if "." in filename.strip(".") else filename
    return stem.strip()[: cards.TITLE_MAX] or "Untitled"


def _attachment_name(name: str, extension: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:60]
    return f"{slug or 'persona'}.{extension}"


# --- the service --------------------------------------------------------------------------------------


class KnowledgeService:
    def __init__(self, *, pool: asyncpg.Pool, personas: PersonaService, upload_max_bytes: int) -> None:
        self._pool = pool
        self._personas = personas
        self._upload_max_bytes = upload_max_bytes
        self._store = KnowledgeStore()

    @property
    def upload_max_bytes(self) -> int:
        """The largest file (or JSON body) the knowledge and import endpoints take."""
        return self._upload_max_bytes

    # --- reads -----------------------------------------------------------------------------------

    async def list_entries(
        self, user: Principal, persona_id: UUID, *, before: tuple[datetime, UUID] | None, limit: int
    ) -> Slice[KnowledgeEntryRow]:
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

    async def add_text(self, user: Principal, persona_id: UUID, *, title: str, content: str) -> KnowledgeEntryRow:
        """A text entry (source "text"); owner only."""
        content = clean_text(content)
        if not content:
            raise ValidationFailed("content: empty", details=[{"field": "content", "message": "empty"}])
        prepared = await asyncio.to_thread(_prepare, title, content)
        return await self._add(user, persona_id, prepared, source="text")

    async def add_file(
        self, user: Principal, persona_id: UUID, *, data: bytes, filename: str | None, title: str | None = None
    ) -> KnowledgeEntryRow:
        """An uploaded TXT, Markdown or PDF file's text (source "file"), typed by its content; owner only.
        413 over `upload_max_bytes`, 415 for other kinds of file, 422 for a PDF that cannot be read or a
        file without text."""
        if len(data) > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")
        filename = _safe_filename(filename)
        # The owner check comes first, so nobody else can make us parse a PDF for them.
        async with self._pool.acquire() as conn:
            if not await self._store.owns_persona(conn, persona_id, owner_id=user.id):
                raise NotFound("persona not found")

        def work() -> tuple[str, _Prepared]:
            content_type, text = extract_file_text(data, filename)
            return content_type, _prepare(title or _title_from_filename(filename), text)

        content_type, prepared = await asyncio.to_thread(work)
        return await self._add(user, persona_id, prepared, source="file", filename=filename, content_type=content_type)

    async def _add(
        self,
        user: Principal,
        persona_id: UUID,
        prepared: _Prepared,
        *,
        source: str,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> KnowledgeEntryRow:
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
        Counts against the plan (403 `plan_limit`)."""
        if len(data) > self._upload_max_bytes:
            raise PayloadTooLarge(f"file: larger than {self._upload_max_bytes} bytes")

        def parse() -> tuple[cards.Card, cards.PersonaFields, list[_Prepared]]:
            card = cards.read_card(data, max_text_bytes=4 * self._upload_max_bytes)
            fields = cards.persona_fields(card)
            knowledge = [_prepare(e.title, clean_text(e.content), e.keys) for e in fields.knowledge]
            return card, fields, [k for k in knowledge if k.content]

        try:
            card, fields, knowledge = await asyncio.to_thread(parse)
        except cards.CardError as err:
            details = [{"field": err.field, "message": err.message}]
            if err.unsupported:
                raise UnsupportedMediaType(f"{err.field}: {err.message}", details=details) from err
            raise ValidationFailed(f"{err.field}: {err.message}", details=details) from err
        async with self._pool.acquire() as conn, conn.transaction():
            persona = await self._personas.create_in(
                conn,
                user,
                name=fields.name,
                description=fields.description,
                personality=fields.personality,
                greeting=fields.greeting,
                tags=fields.tags,
                visibility="private",
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
        log.info("character card imported", persona_id=str(persona.id), spec=card.spec, knowledge=len(knowledge))
        return ImportedCard(persona, len(knowledge), fields.truncated)

    async def export_card(self, user: Principal, persona_id: UUID, *, fmt: str) -> ExportedCard:
        """The persona as a Character Card: V2 JSON (`fmt` "json"), or a PNG (`fmt` "png") carrying V2 in
        a `chara` chunk and V3 in a `ccv3` one, with the knowledge base as the card's character book. A card
        is the whole definition: only for whoever may read it (owner, or anyone when public and remixable)."""
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
            body = await asyncio.to_thread(
                cards.card_png, card, seed=persona.id.bytes, created=persona.created_at, modified=persona.updated_at
            )
            return ExportedCard(body, "image/png", _attachment_name(persona.name, "png"))
        body = await asyncio.to_thread(lambda: json.dumps(cards.to_v2(card), ensure_ascii=False, indent=2).encode())
        return ExportedCard(body, "application/json", _attachment_name(persona.name, "json"))
