"""Wire models: the shapes clients read, as pydantic models (events, acks and the AsyncAPI document use
them). Field names and order are the JSON's: `model_dump(mode="json")` is the bytes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from core.timefmt import iso

# Every time on every wire: ISO 8601 in UTC with a `Z` (core.timefmt.iso), whatever the datetime's zone.
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Wire(BaseModel):
    """Unknown fields refused, so a test that validates what it received sees any key the model lacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenUsage(Wire):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class MessageWire(Wire):
    """A stored message (SPEC Appendix C, the fields stored today): the keys of storage.chat.public_message.
    `MessageWire.model_validate(row)` reads a storage MessageRow by attribute."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    session_id: UUID
    seq: int = Field(ge=1)
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "streaming", "stopped", "failed"]
    client_id: UUID | None
    reply_to: UUID | None
    usage: TokenUsage | None
    attachments: list[Any]
    created_at: Timestamp
