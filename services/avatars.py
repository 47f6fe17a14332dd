"""What may be a picture, shared by personas (PersonaService) and the user's profile (AuthService): one of
the owner's own uploaded images, named by `avatar_file_id`. Deleting the file clears every avatar that
uses it (the columns' foreign keys are ON DELETE SET NULL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, Literal
from uuid import UUID

import asyncpg

from core.entities import Principal, StoredFile
from core.errors import NotFound, ValidationFailed
from services.files.service import FilesService

FIELD = "avatar_file_id"


class Keep(Enum):
    """An update that leaves the avatar as it is (None there means "no avatar")."""

    KEEP = "keep"


KEEP = Keep.KEEP
# What an update does to the avatar: a file to show, None to remove it, KEEP to leave it.
AvatarChange = UUID | None | Literal[Keep.KEEP]


async def own_image(files: FilesService, user: Principal, file_id: UUID) -> StoredFile:
    """The user's own image file; 404 naming the field for anyone else's (or no) file, 422 for one that is
    not an image."""
    (stored,) = await files.owned(user, [file_id], field=FIELD)
    if not stored.is_image:
        raise ValidationFailed(
            f"{FIELD}: an avatar must be an image, not {stored.content_type}",
            details=[{"field": FIELD, "message": "not an image"}],
        )
    return stored


def columns(change: AvatarChange) -> dict[str, Any]:
    """The store's arguments for an update: whether to set the avatar, and to what."""
    return {"set_avatar": change is not KEEP, "avatar_file_id": change if change is not KEEP else None}


@contextmanager
def file_gone_is_not_found() -> Iterator[None]:
    """Around the write: the avatar's file deleted between the check and the write (its foreign key refuses
    the row) is the same 404 as a file that never was."""
    try:
        yield
    except asyncpg.ForeignKeyViolationError as err:
        if "avatar_file" not in (err.constraint_name or ""):
            raise
        raise NotFound(f"{FIELD}: file not found", details=[{"field": FIELD, "message": "file not found"}]) from err
