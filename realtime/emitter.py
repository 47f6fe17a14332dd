"""`Events` over Socket.IO: reaches a user or a room on any node (through Redis when configured)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import socketio
import structlog

from services.events import user_room

log = structlog.get_logger(__name__)


class SocketEvents:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def to_user(self, user_id: UUID, event: str, data: dict[str, Any]) -> None:
        await self._sio.emit(event, data, room=user_room(user_id))

    async def to_room(self, room: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None) -> None:
        await self._sio.emit(event, data, room=room, skip_sid=skip_sid)

    async def to_rooms(self, rooms: list[str], event: str, data: dict[str, Any]) -> None:
        # One emit with a list of rooms: python-socketio sends once per socket across the rooms.
        await self._sio.emit(event, data, room=rooms)

    async def disconnect_user(self, user_id: UUID, *, reason: str) -> None:
        room = user_room(user_id)
        # Every node's sockets hear why; this node closes its own at once. Other nodes' sockets are
        # refused on their next event (each event re-checks the session) and on reconnect.
        await self._sio.emit("session:ended", {"reason": reason}, room=room)
        local = [sid for sid, _ in self._sio.manager.get_participants("/", room)]
        for sid in local:
            await self._sio.disconnect(sid)
        if local:
            log.info("sockets closed", user_id=str(user_id), count=len(local), reason=reason)
