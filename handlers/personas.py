"""REST: /api/v1/personas — CRUD, clone, search, trending, the avatar's bytes.

Every persona leaves through core.wire.PersonaOut.for_viewer with the caller as viewer: someone else's
persona that is not remixable comes with its definition fields (`personality`) null.

Cursors are opaque (handlers.api.encode_cursor). `GET /personas` pages by keyset on (created_at, id),
newest first, so pages never repeat or skip a persona even while personas are added. Search and
trending are ranked lists whose order moves as data changes; their cursor holds an offset.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from core import limits
from core.entities import PersonaDraft, Principal, ScoredPersona
from core.pages import Keyset, Offset, Slice, decode_cursor, encode_cursor
from core.wire import REMIXABLE, PersonaOut, ScoredPersonaOut
from handlers.api import Api, path_uuid
from handlers.files import CONTENT_ANSWERS, ContentQuery, serve_file
from handlers.keys import FILES_SERVICE, PERSONA_SERVICE
from handlers.schemas import CursorParam, Patch, Strict

api = Api("personas")
P = "/api/v1/personas"


Name = Annotated[str, Field(min_length=1, max_length=limits.PERSONA_NAME_MAX)]
Description = Annotated[str, Field(max_length=limits.PERSONA_DESCRIPTION_MAX)]
Personality = Annotated[
    str, Field(max_length=limits.PERSONA_PERSONALITY_MAX, description="The system prompt: who the persona is")
]
Greeting = Annotated[
    str, Field(max_length=limits.PERSONA_GREETING_MAX, description="The persona's first message in a new chat")
]
AlternateGreetings = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=limits.PERSONA_GREETING_MAX)]],
    Field(
        max_length=limits.PERSONA_ALTERNATE_GREETINGS_MAX,
        description=f"Up to {limits.PERSONA_ALTERNATE_GREETINGS_MAX} other greetings of "
        f"1..{limits.PERSONA_GREETING_MAX} characters, in order: the other variants of a new chat's greeting",
    ),
]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.TAG_MAX)]
Tags = Annotated[
    list[Tag],
    Field(
        max_length=limits.TAGS_MAX,
        description=f"Up to {limits.TAGS_MAX} tags of 1..{limits.TAG_MAX} characters; stored lowercased, deduplicated",
    ),
]
Visibility = Literal["private", "public"]
Remixable = Annotated[bool, Field(description=REMIXABLE)]
AvatarFileId = Annotated[
    UUID,
    Field(description="One of my own image files (uploaded to /files): 404 for anyone else's, 422 if not an image"),
]
Limit = Field(default=20, ge=1, le=100)


class PersonaIn(Strict):
    name: Name
    description: Description = ""
    personality: Personality = ""
    greeting: Greeting = ""
    alternate_greetings: AlternateGreetings = []
    tags: Tags = []
    visibility: Visibility = "private"
    remixable: Remixable = False
    avatar_file_id: AvatarFileId | None = None


class PersonaPatch(Patch):
    """Any subset of the persona's fields; a field left out is left as it is. Null is refused, except for
    `avatar_file_id`, where it removes the avatar."""

    clearable: ClassVar[frozenset[str]] = frozenset({"avatar_file_id"})

    name: Name | None = None
    description: Description | None = None
    personality: Personality | None = None
    greeting: Greeting | None = None
    alternate_greetings: AlternateGreetings | None = None
    tags: Tags | None = None
    visibility: Visibility | None = None
    remixable: Remixable | None = None
    avatar_file_id: AvatarFileId | None = None


class PersonaPage(BaseModel):
    items: list[PersonaOut]
    next_cursor: str | None


class ScoredPersonaPage(BaseModel):
    items: list[ScoredPersonaOut]
    next_cursor: str | None


class ListQuery(Strict):
    limit: int = Limit
    cursor: CursorParam = None


class SearchQuery(ListQuery):
    q: str = Field(min_length=1, max_length=200, description='Words to find (web-search syntax: "quoted", -not, or)')


class TrendingQuery(ListQuery):
    pass


def _scored_page(user: Principal, page: Slice[ScoredPersona], offset: int) -> dict[str, Any]:
    items = [ScoredPersonaOut.for_viewer_scored(s, user.id) for s in page.items]
    cursor = encode_cursor(Offset(offset=offset + len(page.items))) if page.more else None
    return {"items": items, "next_cursor": cursor}


def _offset(cursor: str | None) -> int:
    position = decode_cursor(cursor, Offset)
    return position.offset if position is not None else 0


@api.route("GET", P, summary="My personas, newest first", query=ListQuery, response=PersonaPage)
async def list_personas(request: web.Request, user: Principal, query: ListQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    page = await request.app[PERSONA_SERVICE].list_own(user, before=before, limit=query.limit)
    cursor = None
    if page.more:
        last = page.items[-1]
        cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id))
    return {"items": [PersonaOut.for_viewer(p, user.id) for p in page.items], "next_cursor": cursor}


@api.route("POST", P, summary="Create a persona", body=PersonaIn, response=PersonaOut, status=201, errors=(403, 404))
async def create_persona(request: web.Request, user: Principal, body: PersonaIn) -> PersonaOut:
    """403 `plan_limit` when the user already has as many personas as their plan allows. `avatar_file_id`
    must be one of the user's own images: 404 `not_found` naming the field otherwise, 422 if not an image."""
    draft = PersonaDraft(**body.model_dump(exclude={"avatar_file_id"}))
    persona = await request.app[PERSONA_SERVICE].create(user, draft, avatar_file_id=body.avatar_file_id)
    return PersonaOut.for_viewer(persona, user.id)


# Registered before /personas/{id}, which would otherwise capture "search" and "trending".
@api.route(
    "GET", f"{P}/search", summary="Search public personas and mine", query=SearchQuery, response=ScoredPersonaPage
)
async def search_personas(request: web.Request, user: Principal, query: SearchQuery) -> dict[str, Any]:
    """Full-text search over name (weighted highest), tags, description and personality (of others' personas
    only when they are remixable); best first."""
    offset = _offset(query.cursor)
    page = await request.app[PERSONA_SERVICE].search(user, query.q, offset=offset, limit=query.limit)
    return _scored_page(user, page, offset)


@api.route("GET", f"{P}/trending", summary="Trending public personas", query=TrendingQuery, response=ScoredPersonaPage)
async def trending_personas(request: web.Request, user: Principal, query: TrendingQuery) -> dict[str, Any]:
    """Score = sum of (chats * 3 + messages) * 0.5 ** (age in days / 2) over the last 14 days; then personas with
    no recent activity (score 0), newest first."""
    offset = _offset(query.cursor)
    page = await request.app[PERSONA_SERVICE].trending(offset=offset, limit=query.limit)
    return _scored_page(user, page, offset)


@api.route("GET", f"{P}/{{id}}", summary="One persona (mine or public)", response=PersonaOut, errors=(404,))
async def get_persona(request: web.Request, user: Principal) -> PersonaOut:
    """Someone else's public persona comes with its definition (`personality`) null unless it is remixable."""
    persona = await request.app[PERSONA_SERVICE].get_readable(user, path_uuid(request))
    return PersonaOut.for_viewer(persona, user.id)


@api.route("PUT", f"{P}/{{id}}", summary="Change my persona", body=PersonaPatch, response=PersonaOut, errors=(404,))
async def update_persona(request: web.Request, user: Principal, body: PersonaPatch) -> PersonaOut:
    """Send all fields or only those to change. `avatar_file_id`: one of my own images (404 `not_found`
    naming the field otherwise, 422 if not an image), or null to remove the avatar."""
    persona_id = path_uuid(request)
    persona = await request.app[PERSONA_SERVICE].update(user, persona_id, **body.model_dump(exclude_unset=True))
    return PersonaOut.for_viewer(persona, user.id)


@api.route("DELETE", f"{P}/{{id}}", summary="Delete my persona", status=204, errors=(404,))
async def delete_persona(request: web.Request, user: Principal) -> None:
    await request.app[PERSONA_SERVICE].delete(user, path_uuid(request))


@api.route(
    "POST",
    f"{P}/{{id}}/clone",
    summary="Copy a persona (mine, or public and remixable) into a private one of mine",
    response=PersonaOut,
    status=201,
    errors=(403, 404),
)
async def clone_persona(request: web.Request, user: Principal) -> PersonaOut:
    """Copies the knowledge base too. Someone else's public persona that is not remixable: 403 `forbidden`.
    Counts against the plan's persona limit (403 `plan_limit`)."""
    persona = await request.app[PERSONA_SERVICE].clone(user, path_uuid(request))
    return PersonaOut.for_viewer(persona, user.id)


@api.route(
    "GET",
    f"{P}/{{id}}/avatar",
    summary="A persona's avatar (mine or public)",
    query=ContentQuery,
    **{**CONTENT_ANSWERS, "content_type": "image/*", "other_content": {}},  # an avatar is always an image
)
async def persona_avatar(request: web.Request, user: Principal, query: ContentQuery) -> web.StreamResponse:
    """The image's bytes (`?variant=thumbnail`: at most 256 px), for whoever may read the persona: its owner,
    or anyone when it is public. Sent like GET /files/{id}/content (ETag, Range, nosniff). 404 when the
    persona is not readable or has no avatar."""
    stored = await request.app[PERSONA_SERVICE].avatar(user, path_uuid(request))
    return await serve_file(request, request.app[FILES_SERVICE], stored, query.variant)
