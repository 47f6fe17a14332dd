"""Connect and disconnect: the access token in the connect `auth` payload decides, before anything else.
Presence (online/offline across a user's sockets) is announced to the user's own sockets."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

import socketio
import structlog

from core.errors import AppError
from core.events import PresenceEvent, user_room
from realtime.acks import failed
from realtime.emitter import SocketEvents
from realtime.guard import SocketUsers
from services.auth import AuthService
from services.metrics import Metrics
from services.outages import DATABASE_DOWN

log = structlog.get_logger("parlor.socket")


class Presence(Protocol):
    """What connect and disconnect need of the presence counts (storage/presence.py keeps them, on every
    node): each returns how many sockets the user has afterwards."""

    async def add(self, user_id: UUID, sid: str) -> int: ...

    async def remove(self, user_id: UUID, sid: str) -> int: ...


def register(
    sio: socketio.AsyncServer, *, auth_service: AuthService, users: SocketUsers, presence: Presence, metrics: Metrics
) -> None:
    emitter = SocketEvents(sio)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError(
                "missing access token: connect with auth {token}", {"code": "unauthorized"}
            )
        try:
            # Always a fresh check at connect (no cache): a ban or logout-all must stop new sockets at once.
            user, claims = await auth_service.authenticate_claims(token)
        except AppError as err:
            # The client reads err.message and err.data.code (e.g. token_expired → refresh and retry).
            raise socketio.exceptions.ConnectionRefusedError(err.message, {"code": err.code}) from err
        except DATABASE_DOWN as err:  # PostgreSQL unreachable: a reason, not a silent hang
            raise socketio.exceptions.ConnectionRefusedError(
                "the database is unavailable, try again shortly", {"code": "unavailable"}
            ) from err
        await users.remember(sid, user, session_id=claims.session_id)
        await sio.enter_room(sid, user_room(user.id))
        metrics.sockets.inc()
        count = await presence.add(user.id, sid)
        if count == 1:
            await emitter.to_user(user.id, PresenceEvent(user_id=user.id, online=True))
        log.debug("socket connected", user_id=str(user.id), sid=sid)

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        session = await sio.get_session(sid)
        if not session or "user_id" not in session:
            return
        user_id = session["user_id"]
        metrics.sockets.dec()
        remaining = await presence.remove(user_id, sid)
        if remaining == 0:
            await emitter.to_user(user_id, PresenceEvent(user_id=user_id, online=False))
        log.debug("socket disconnected", user_id=str(user_id), sid=sid)

    @sio.on("*")
    async def unknown_event(event: str, sid: str, *args: Any) -> dict[str, Any]:
        return failed("unknown_event", f"unknown event {event!r}")
