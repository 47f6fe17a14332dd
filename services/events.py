"""The one way services reach clients. Implemented by `realtime.emitter`; services never import socketio."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID


def user_room(user_id: UUID | str) -> str:
    """Every socket of one user."""
    return f"user:{user_id}"


def chat_room(session_id: UUID | str) -> str:
    """Every socket watching one chat session."""
    return f"chat:{session_id}"


class Events(Protocol):
    async def to_user(self, user_id: UUID, event: str, data: dict[str, Any]) -> None:
        """Every socket of the user, on any node."""

    async def to_room(self, room: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None) -> None:
        """Every socket in a room, on any node."""

    async def to_rooms(self, rooms: list[str], event: str, data: dict[str, Any]) -> None:
        """Every socket in any of the rooms, once even when it is in several."""

    async def disconnect_user(self, user_id: UUID, *, reason: str) -> None:
        """Tell the user's sockets their session ended and close them."""
