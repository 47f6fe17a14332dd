"""REST: /api/v1/personas/{id}/knowledge (a persona's knowledge base: its owner changes it; others read it
only when the persona is public and remixable), /personas/import and /personas/{id}/export (Character Cards).

Uploads are multipart, read part by part and refused with 413 as soon as a file passes the size limit:
a request never buffers more than the limit. What a file is gets decided from its bytes, never its name."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core import limits
from core.entities import Principal
from core.errors import UnsupportedMediaType
from core.pages import Keyset, decode_cursor, encode_cursor
from core.wire import JobOut, KnowledgeEntryDetail, KnowledgeEntryOut, PersonaOut
from handlers.api import Api, client_ip, model_response, parse_model, path_uuid, read_json
from handlers.keys import FILES_SERVICE, KNOWLEDGE_INGESTS, KNOWLEDGE_SERVICE
from handlers.multipart import read_upload
from handlers.schemas import CursorParam, Strict

api = Api("knowledge")
P = "/api/v1/personas"

Title = Annotated[str, Field(min_length=1, max_length=limits.KNOWLEDGE_TITLE_MAX)]


class KnowledgeTextIn(Strict):
    title: Title
    content: str = Field(min_length=1, max_length=limits.KNOWLEDGE_TEXT_MAX)


class KnowledgeFileRef(Strict):
    file_id: UUID = Field(description="One of my files uploaded with category knowledge_base")
    title: Title | None = Field(default=None, description="Default: the file's name")
    run_async: bool = Field(
        default=False,
        alias="async",
        description="true: always answer 202 with a job; a large file (over 1 MiB, or a PDF of more than 20 "
        "pages) is a job either way",
    )


class KnowledgeFileFields(Strict):
    title: Title | None = None


class KnowledgeFileIn(BaseModel):
    """The multipart form of POST /personas/{id}/knowledge."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(description="TXT, Markdown or PDF, at most UPLOAD_MAX_BYTES; the type comes from the content")
    title: str | None = Field(
        default=None, max_length=limits.KNOWLEDGE_TITLE_MAX, description="Left out or blank: the file's name"
    )


class CardUpload(BaseModel):
    """The multipart form of POST /personas/import."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(description="A Character Card: a PNG carrying one, or its JSON (V1, V2 or V3)")


class KnowledgePage(BaseModel):
    items: list[KnowledgeEntryOut]
    next_cursor: str | None


class KnowledgeListQuery(Strict):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class ImportOut(BaseModel):
    persona: PersonaOut
    knowledge_entries: int = Field(description="Knowledge entries made from the card's character book")
    truncated: list[str] = Field(
        description="Fields clipped to fit Parlor's limits (e.g. `description`); `avatar` when a PNG card's "
        "picture could not be kept (storage full, or not a valid image)"
    )


class ExportQuery(Strict):
    format: Literal["json", "png"] = "json"


class CardBookEntryOut(BaseModel):
    keys: list[str]
    content: str
    enabled: bool
    insertion_order: int
    name: str
    comment: str


class CardBookOut(BaseModel):
    name: str
    entries: list[CardBookEntryOut]


class CardDataOut(BaseModel):
    name: str
    description: str
    personality: str
    scenario: str
    first_mes: str
    mes_example: str
    creator_notes: str
    system_prompt: str
    post_history_instructions: str
    alternate_greetings: list[str]
    tags: list[str]
    creator: str
    character_version: str
    character_book: CardBookOut | None = None
    extensions: dict[str, Any]


class CharacterCardOut(BaseModel):
    """Character Card V2 (format=json). With format=png: a PNG carrying this card base64-encoded in a
    `chara` tEXt chunk and its V3 form in a `ccv3` one."""

    spec: Literal["chara_card_v2"]
    spec_version: Literal["2.0"]
    data: CardDataOut


# --- knowledge ------------------------------------------------------------------------------------


@api.route(
    "GET",
    f"{P}/{{id}}/knowledge",
    summary="A persona's knowledge entries (mine, or public and remixable), newest first",
    query=KnowledgeListQuery,
    response=KnowledgePage,
    errors=(403, 404),
)
async def list_knowledge(request: web.Request, user: Principal, query: KnowledgeListQuery) -> dict[str, Any]:
    """Entries without their text. Someone else's public persona that is not remixable: 403 `forbidden`; a
    private one: 404."""
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    page = await request.app[KNOWLEDGE_SERVICE].list_entries(user, path_uuid(request), before=before, limit=query.limit)
    cursor = None
    if page.more:
        last = page.items[-1]
        cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id))
    return {"items": [KnowledgeEntryOut.model_validate(e) for e in page.items], "next_cursor": cursor}


@api.route(
    "POST",
    f"{P}/{{id}}/knowledge",
    summary="Add knowledge to my persona: a text, or a TXT/Markdown/PDF file",
    response=KnowledgeEntryOut,
    status=201,
    errors=(400, 404, 413, 415, 422, 429),
    other_statuses={202: JobOut},
    body_content={"application/json": KnowledgeTextIn | KnowledgeFileRef, "multipart/form-data": KnowledgeFileIn},
)
async def add_knowledge(request: web.Request, user: Principal) -> KnowledgeEntryOut | web.Response:
    """Two forms of request:

    - `application/json` `{"title": 1..200 chars, "content": 1..200000 chars}` → source `text`;
    - `application/json` `{"file_id", "title"?, "async"?}`: one of my files uploaded with category
      `knowledge_base` (`POST /files/upload`) → source `file`, as if uploaded here. A large file (over 1 MiB,
      or a PDF of more than 20 pages), or any file with `"async": true`, is added by a background job: the
      answer is then 202 with the job (`job:progress` per PDF page; its result names the new entry);
    - `multipart/form-data` with a `file` part (TXT, Markdown or PDF, at most UPLOAD_MAX_BYTES) and an
      optional `title` part (default: the file's name) → source `file`. The type comes from the content:
      `%PDF-` is a PDF, UTF-8 text is text; anything else is 415. A PDF that is password-protected or
      damaged, or a file with no text, is 422.

    The text is split into chunks of about 800-1200 characters that chat replies draw on. Owner only."""
    knowledge = request.app[KNOWLEDGE_SERVICE]
    persona_id = path_uuid(request)
    if request.content_type == "application/json":
        raw = await read_json(request, knowledge.upload_max_bytes)
        if isinstance(raw, dict) and "file_id" in raw:
            ref = parse_model(KnowledgeFileRef, raw)
            ingests = request.app[KNOWLEDGE_INGESTS]
            if ref.run_async or await ingests.wants_job(user, persona_id, ref.file_id):
                job = await ingests.start(user, persona_id, ref.file_id, title=ref.title)
                return model_response(JobOut.model_validate(job), status=202)
            entry = await knowledge.add_stored_file(user, persona_id, ref.file_id, title=ref.title)
        else:
            body = parse_model(KnowledgeTextIn, raw)
            entry = await knowledge.add_text(user, persona_id, title=body.title, content=body.content)
    elif request.content_type == "multipart/form-data":
        upload = await read_upload(request, limit=knowledge.upload_max_bytes, fields=("title",))
        # A form's empty title input means "no title" (the file's name then).
        extra = parse_model(KnowledgeFileFields, {k: v for k, v in upload.fields.items() if v.strip()})
        entry = await knowledge.add_file(
            user, persona_id, data=upload.data, filename=upload.filename, title=extra.title
        )
    else:
        raise UnsupportedMediaType("send application/json {title, content} or multipart/form-data with a `file`")
    return KnowledgeEntryOut.model_validate(entry)


@api.route(
    "GET",
    f"{P}/{{id}}/knowledge/{{entry_id}}",
    summary="One knowledge entry, with its text (mine, or of a public and remixable persona)",
    response=KnowledgeEntryDetail,
    errors=(403, 404),
)
async def get_knowledge(request: web.Request, user: Principal) -> KnowledgeEntryDetail:
    """Someone else's public persona that is not remixable: 403 `forbidden`; a private one: 404."""
    document = await request.app[KNOWLEDGE_SERVICE].get_entry(user, path_uuid(request), path_uuid(request, "entry_id"))
    return KnowledgeEntryDetail(
        **KnowledgeEntryOut.model_validate(document.entry).model_dump(), content=document.content
    )


@api.route(
    "DELETE",
    f"{P}/{{id}}/knowledge/{{entry_id}}",
    summary="Delete a knowledge entry of my persona",
    status=204,
    errors=(404,),
)
async def delete_knowledge(request: web.Request, user: Principal) -> None:
    await request.app[KNOWLEDGE_SERVICE].delete_entry(user, path_uuid(request), path_uuid(request, "entry_id"))


# --- Character Cards ------------------------------------------------------------------------------


@api.route(
    "POST",
    f"{P}/import",
    summary="Import a Character Card (PNG or JSON) as a new private persona",
    response=ImportOut,
    status=201,
    errors=(400, 403, 413, 415, 422, 429),
    body_content={"multipart/form-data": CardUpload},
)
async def import_card(request: web.Request, user: Principal) -> dict[str, Any]:
    """`multipart/form-data` with a `file` part: a PNG carrying a card (text chunk `ccv3` or `chara`) or a
    card's JSON (V1, V2 or V3). Mapping: name, description; first_mes → greeting; alternate_greetings (the
    first 20 non-blank, each clipped to a greeting's length); tags (lowercased, at most 20); personality,
    or personality/scenario/system prompt/example dialogue as labelled sections → personality; each
    enabled character book entry → a knowledge entry (source `character_book`). A PNG's picture becomes
    the persona's avatar, stored as my `persona_image` file (counted against my storage; when it cannot be
    kept the persona comes without it and `truncated` lists `avatar`). Counts against the plan's persona
    limit (403 `plan_limit`). Neither PNG nor JSON: 415; no card, or a broken one: 422 naming the problem."""
    knowledge = request.app[KNOWLEDGE_SERVICE]
    # A card's picture goes through the image workers: the upload rate applies (429 + Retry-After).
    await request.app[FILES_SERVICE].check_rate(user, client_ip(request))
    upload = await read_upload(request, limit=knowledge.upload_max_bytes)
    imported = await knowledge.import_card(user, upload.data)
    return {
        "persona": PersonaOut.for_viewer(imported.persona, user.id),
        "knowledge_entries": imported.knowledge_entries,
        "truncated": imported.truncated,
    }


@api.route(
    "GET",
    f"{P}/{{id}}/export",
    summary="Export a persona (mine, or public and remixable) as a Character Card",
    query=ExportQuery,
    response=CharacterCardOut,
    other_content={"image/png": bytes},
    errors=(403, 404),
)
async def export_card(request: web.Request, user: Principal, query: ExportQuery) -> web.Response:
    """`format=json` (default): Character Card V2 JSON. `format=png`: the persona's avatar as a PNG (a
    placeholder portrait when it has none) carrying the card as V2 (`chara` chunk) and V3 (`ccv3` chunk),
    which SillyTavern and most card tools import. Sent
    as an attachment. The persona's knowledge goes into the card's character book. A card is the persona's
    whole definition: someone else's public persona that is not remixable is 403 `forbidden`; a private one
    404."""
    exported = await request.app[KNOWLEDGE_SERVICE].export_card(user, path_uuid(request), fmt=query.format)
    return web.Response(
        body=exported.body,
        content_type=exported.content_type,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )
