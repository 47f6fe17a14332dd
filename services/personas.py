"""PersonaService: personas CRUD, clone, search, trending, plan limits.

Authorization lives here: a persona is readable by its owner and, when public, by everyone; only the
owner changes or deletes it. Anything else is "not found", so a private persona's existence never leaks.
A public persona's definition (personality, knowledge base) stays the owner's unless the owner makes it
`remixable`: others may chat with it, but reading its definition, exporting and cloning it are 403
`forbidden` (core.wire.PersonaOut.for_viewer nulls the definition fields for them).

A persona's avatar is one of its owner's own images (services.avatars), set on create and update; whoever
may read the persona may fetch it. A clone keeps its source's picture (the source owner's file, until they
delete it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg
import structlog

from core.entities import Persona, PersonaDraft, Principal, ScoredPersona, StoredFile
from core.errors import Forbidden, NotFound, Unauthorized
from core.events import Events
from core.pages import Slice
from services import avatars
from services.avatars import KEEP, AvatarChange
from services.files.service import FilesService
from services.plans import Plans
from storage.files import FileStore
from storage.knowledge import KnowledgeStore
from storage.personas import PersonaStore
from storage.users import UserStore

log = structlog.get_logger(__name__)
T = TypeVar("T")


def definition_readable(persona: Persona, user: Principal) -> Persona:
    """`persona` (which `user` may read) if its definition is theirs to read too; 403 `forbidden` otherwise."""
    if not persona.definition_readable_by(user.id):
        raise Forbidden("this persona's definition is its owner's: chat with it, but it cannot be read or copied")
    return persona


def normalize_tags(tags: Sequence[str]) -> list[str]:
    """Trimmed, lowercased, duplicates dropped, first occurrence's order kept."""
    seen: dict[str, None] = {}
    for tag in tags:
        cleaned = tag.strip().lower()
        if cleaned:
            seen.setdefault(cleaned, None)
    return list(seen)


class PersonaService:
    def __init__(self, *, pool: asyncpg.Pool, plans: Plans, events: Events, files: FilesService) -> None:
        self._pool = pool
        self._plans = plans
        self._events = events
        self._files = files
        self._personas = PersonaStore()
        self._users = UserStore()
        self._knowledge = KnowledgeStore()
        self._file_rows = FileStore()

    # --- plan limit ----------------------------------------------------------------------------

    async def check_slot(self, user: Principal) -> None:
        """403 `plan_limit` when the user has no persona left to make, before work that would be wasted
        (a Character Card's picture); the create itself checks again under the lock."""
        async with self._pool.acquire() as conn:
            await self._reserve_slot(conn, user, lock=False)

    async def _reserve_slot(self, conn: asyncpg.Connection, user: Principal, *, lock: bool = True) -> None:
        """Inside the caller's transaction: lock the owner's row (so concurrent creates queue up
        behind each other), then count. Reads the plan from the locked row, not the token's copy.
        `lock=False`: the same check without the lock (`check_slot`)."""
        owner = await self._users.get(conn, user.id, for_update=lock)
        if owner is None:
            raise Unauthorized("account no longer exists")
        limit = self._plans.limits(owner.plan).max_personas
        if limit and await self._personas.count_owned(conn, owner.id) >= limit:
            raise Forbidden(
                f"the {owner.plan} plan allows {limit} personas; delete one or upgrade",
                code="plan_limit",
                details={"limit": limit, "plan": owner.plan},
            )

    # --- reads ---------------------------------------------------------------------------------

    async def get_readable(self, user: Principal, persona_id: UUID) -> Persona:
        """The persona if `user` owns it or it is public; NotFound otherwise."""
        async with self._pool.acquire() as conn:
            persona = await self._personas.get(conn, persona_id)
        if persona is None or not persona.readable_by(user.id):
            raise NotFound("persona not found")
        return persona

    async def get_definition(self, user: Principal, persona_id: UUID) -> Persona:
        """The persona if `user` may read its definition (see `definition_readable`)."""
        return definition_readable(await self.get_readable(user, persona_id), user)

    async def avatar(self, user: Principal, persona_id: UUID) -> StoredFile:
        """The picture of a persona `user` may read; NotFound when they may not, or when it has none."""
        stored = await self.avatar_of(await self.get_readable(user, persona_id))
        if stored is None:
            raise NotFound("this persona has no avatar")
        return stored

    async def avatar_of(self, persona: Persona) -> StoredFile | None:
        """The persona's picture file, whoever owns it (a clone shows its source's), without access checks."""
        if persona.avatar_file_id is None:
            return None
        async with self._pool.acquire() as conn:
            return await self._file_rows.get(conn, persona.avatar_file_id)

    async def list_own(self, user: Principal, *, before: tuple[datetime, UUID] | None, limit: int) -> Slice[Persona]:
        """The user's personas, newest first; `before` is the (created_at, id) of the previous page's last."""
        async with self._pool.acquire() as conn:
            rows = await self._personas.list_owned(conn, user.id, before=before, limit=limit + 1)
        return Slice(rows[:limit], len(rows) > limit)

    async def search(self, user: Principal, query: str, *, offset: int, limit: int) -> Slice[ScoredPersona]:
        """Public personas and the user's own matching `query` (web-search syntax), best match first."""
        async with self._pool.acquire() as conn:
            rows = await self._personas.search(conn, viewer_id=user.id, query=query, offset=offset, limit=limit + 1)
        return Slice(rows[:limit], len(rows) > limit)

    async def trending(self, *, offset: int, limit: int) -> Slice[ScoredPersona]:
        """Public personas by time-decayed recent activity, then the quiet ones, newest first."""
        async with self._pool.acquire() as conn:
            rows = await self._personas.trending(conn, offset=offset, limit=limit + 1)
        return Slice(rows[:limit], len(rows) > limit)

    # --- changes -------------------------------------------------------------------------------

    async def create(self, user: Principal, draft: PersonaDraft, *, avatar_file_id: UUID | None = None) -> Persona:
        """`avatar_file_id`: one of the user's own images (404 naming the field otherwise, 422 if not an image)."""
        if avatar_file_id is not None:
            await avatars.own_image(self._files, user, avatar_file_id)
        with avatars.file_gone_is_not_found():
            async with self._pool.acquire() as conn, conn.transaction():
                persona = await self.create_in(conn, user, draft, avatar_file_id=avatar_file_id)
        log.info("persona created", persona_id=str(persona.id))
        return persona

    async def create_in(
        self, conn: asyncpg.Connection, user: Principal, draft: PersonaDraft, *, avatar_file_id: UUID | None = None
    ) -> Persona:
        """`create` inside the caller's transaction, for callers that store more with the new persona
        (Character Card import adds its knowledge): the plan check and the insert commit or roll back with
        the rest. The caller has checked `avatar_file_id` (services.avatars.own_image)."""
        await self._reserve_slot(conn, user)
        return await self._personas.insert(
            conn,
            owner_id=user.id,
            draft=dataclasses.replace(draft, tags=normalize_tags(draft.tags)),
            avatar_file_id=avatar_file_id,
        )

    async def update(
        self,
        user: Principal,
        persona_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        personality: str | None = None,
        greeting: str | None = None,
        alternate_greetings: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        visibility: str | None = None,
        remixable: bool | None = None,
        avatar_file_id: AvatarChange = KEEP,
    ) -> Persona:
        """Changes the fields given (None leaves a field as it is). The avatar is the exception: None
        removes it, KEEP (the default) leaves it; a file must be the user's own image. Owner only."""
        if avatar_file_id is not KEEP and avatar_file_id is not None:
            await avatars.own_image(self._files, user, avatar_file_id)
        with avatars.file_gone_is_not_found():
            async with self._pool.acquire() as conn:
                persona = await self._personas.update(
                    conn,
                    persona_id,
                    owner_id=user.id,
                    name=name,
                    description=description,
                    personality=personality,
                    greeting=greeting,
                    alternate_greetings=list(alternate_greetings) if alternate_greetings is not None else None,
                    tags=normalize_tags(tags) if tags is not None else None,
                    visibility=visibility,
                    remixable=remixable,
                    **avatars.columns(avatar_file_id),
                )
        if persona is None:
            raise NotFound("persona not found")
        return persona

    async def delete(self, user: Principal, persona_id: UUID) -> None:
        """Owner only. Chat sessions keep their messages (their persona becomes null); clones stay."""
        async with self._pool.acquire() as conn:
            deleted = await self._personas.delete(conn, persona_id, owner_id=user.id)
        if not deleted:
            raise NotFound("persona not found")
        log.info("persona deleted", persona_id=str(persona_id))

    async def clone(self, user: Principal, persona_id: UUID) -> Persona:
        """A private, not remixable copy of a persona whose definition the user may read (their own, or a
        public remixable one), with its knowledge base, owned by the user; counts against the plan."""
        async with self._pool.acquire() as conn, conn.transaction():
            source = await self._personas.get(conn, persona_id)
            if source is None or not source.readable_by(user.id):
                raise NotFound("persona not found")
            definition_readable(source, user)
            await self._reserve_slot(conn, user)
            draft = PersonaDraft(
                name=source.name,
                description=source.description,
                personality=source.personality,
                greeting=source.greeting,
                alternate_greetings=list(source.alternate_greetings),
                tags=list(source.tags),
            )
            persona = await self._personas.insert(
                conn, owner_id=user.id, draft=draft, avatar_file_id=source.avatar_file_id, cloned_from=source.id
            )
            # The knowledge base comes along (entries and their chunks), in the same transaction.
            knowledge = await self._knowledge.copy(conn, source_persona_id=source.id, target_persona_id=persona.id)
        log.info("persona cloned", persona_id=str(persona.id), source_id=str(source.id), knowledge=knowledge)
        return persona
