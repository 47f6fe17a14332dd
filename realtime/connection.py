"""Connect and disconnect: the access token in the connect `auth` payload decides, before anything else."""

from __future__ import annotations

from typing import Any

import socketio
import structlog

from realtime.emitter import user_room
from server.errors import AppError
from server.metrics import Metrics
from services.auth import AuthService

log = structlog.get_logger("parlor.socket")


def register(sio: socketio.AsyncServer, *, auth_service: AuthService, metrics: Metrics) -> None:
    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError(
                "missing access token: connect with auth {token}", {"code": "unauthorized"}
            )
        try:
            user = await auth_service.authenticate(token)
        except AppError as err:
            # The client reads err.message and err.data.code (e.g. token_expired → refresh and retry).
            raise socketio.exceptions.ConnectionRefusedError(err.message, {"code": err.code}) from err
        await sio.save_session(sid, {"user_id": str(user.id), "role": user.role})
        await sio.enter_room(sid, user_room(user.id))
        metrics.sockets.inc()
        log.info("socket connected", user_id=str(user.id), sid=sid)

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        session = await sio.get_session(sid)
        if session:
            metrics.sockets.dec()
            log.info("socket disconnected", user_id=session.get("user_id"), sid=sid)
