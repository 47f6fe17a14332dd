"""Request and response shapes shared by several handler modules (SPEC Appendix C)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Request bodies: unknown fields are refused (422 naming the field)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserOut(BaseModel):
    id: UUID
    email: str
    display_name: str
    role: str
    plan: str
    timezone: str
    created_at: datetime
    has_password: bool
    firebase_linked: bool
    banned: bool


class SessionOut(BaseModel):
    user: UserOut
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None
