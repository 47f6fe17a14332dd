"""Entities every layer shares, as plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class Principal:
    """The signed-in user as handlers, socket events and services see them: who they are and what they may
    do, and nothing secret (no password hash). Made by AuthService from the stored user."""

    id: UUID
    email: str
    display_name: str
    role: str
    plan: str
    timezone: str
    session_version: int
    created_at: datetime
    has_password: bool
    firebase_linked: bool
    banned: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
