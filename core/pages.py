"""Pages of a list and the one cursor codec. Every list answers `{"items": [...], "next_cursor"}`; a
cursor is opaque to clients (they pass `next_cursor` back as `cursor`): the position where the page
ended, as a small model, in URL-safe base64 JSON. Chat history is the one list paged by seq instead
(its `next_cursor` is the seq to pass as `after_seq` or `before_seq`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ValidationFailed
from core.validation import in_database_range

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Slice(Generic[T]):
    """One page of a list as a service answers it; `more` says whether another page follows."""

    items: list[T]
    more: bool


class Position(BaseModel):
    """Where a page ended. A subclass per ordering; its fields are the cursor's content, read strictly
    (a cursor we made never needs coercing)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Keyset(Position):
    """A newest-first list ordered by (created_at, id): the last item's pair."""

    created_at: datetime
    id: UUID


class Offset(Position):
    """A ranked list whose order moves as data changes (search, trending): how many items came before."""

    offset: int = Field(ge=0)


class IdPosition(Position):
    """A list ordered by a bigint id, newest first (the credit ledger, the audit log)."""

    id: int = Field(ge=0)


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(position.model_dump_json().encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, model: type[M]) -> M | None:
    """The position in a cursor made by `encode_cursor`; None for no cursor; 422 naming `cursor` if it
    was not made by us (or was made for another list, or holds a number or time the database cannot take:
    ours never do)."""
    if cursor is None:
        return None
    invalid = ValidationFailed(
        "cursor: invalid", details=[{"field": "cursor", "message": "not a cursor from this list"}]
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = model.model_validate_json(raw)
    except ValueError as err:  # bad base64, bad JSON, wrong shape: all ValueErrors
        raise invalid from err
    if not in_database_range(position):
        raise invalid
    return position
