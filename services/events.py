"""The one way services reach clients. Implemented by `realtime.emitter`; services never import socketio."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID


class Events(Protocol):
    async def to_user(self, user_id: UUID, event: str, data: dict[str, Any]) -> None:
        """Every socket of the user, on any node."""

    async def to_room(self, room: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None) -> None:
        """Every socket in a room, on any node."""

    async def disconnect_user(self, user_id: UUID, *, reason: str) -> None:
        """Tell the user's sockets their session ended and close them."""
