"""`Events` over Socket.IO: reaches a user, a room or one socket on any node (through Redis when configured).
Each event model is serialised once here, whatever the number of recipients."""

from __future__ import annotations

from uuid import UUID

import socketio
import structlog

from core.events import EndReason, ServerEvent, SessionEndedEvent, user_room

log = structlog.get_logger(__name__)


class SocketEvents:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def to_user(self, user_id: UUID, event: ServerEvent) -> None:
        await self._sio.emit(event.name, event.model_dump(mode="json"), room=user_room(user_id))

    async def to_room(self, room: str, event: ServerEvent, *, skip_sid: str | None = None) -> None:
        await self._sio.emit(event.name, event.model_dump(mode="json"), room=room, skip_sid=skip_sid)

    async def to_rooms(self, rooms: list[str], event: ServerEvent) -> None:
        # One emit with a list of rooms: python-socketio sends once per socket across the rooms.
        await self._sio.emit(event.name, event.model_dump(mode="json"), room=rooms)

    async def to_socket(self, sid: str, event: ServerEvent) -> None:
        """One socket of this node (an `ai:resume` replay); not in `Events`: services never see sockets."""
        await self._sio.emit(event.name, event.model_dump(mode="json"), to=sid)

    async def disconnect_user(self, user_id: UUID, *, reason: EndReason) -> None:
        room = user_room(user_id)
        # Every node's sockets hear why; this node closes its own at once. Other nodes' sockets are
        # refused on their next event (each event re-checks the session) and on reconnect.
        await self.to_user(user_id, SessionEndedEvent(reason=reason))
        local = [sid for sid, _ in self._sio.manager.get_participants("/", room)]
        for sid in local:
            await self._sio.disconnect(sid)
        if local:
            log.info("sockets closed", user_id=str(user_id), count=len(local), reason=reason)
