"""Who is behind a socket, re-checked on every event so a ban or logout-all reaches sockets on every
node. The check is cached for a few seconds per user: a chat burst costs one query, not one per event."""

from __future__ import annotations

import time
from uuid import UUID

import socketio

from core.entities import Principal
from core.errors import Unauthorized
from services.auth import AuthService

CACHE_SECONDS = 5.0


class SocketUsers:
    def __init__(self, sio: socketio.AsyncServer, auth: AuthService) -> None:
        self._sio = sio
        self._auth = auth
        self._cache: dict[tuple[UUID, int, UUID | None], tuple[float, Principal]] = {}

    async def remember(self, sid: str, user: Principal, *, session_id: UUID | None = None) -> None:
        """`session_id`: the access token's session, so that revoking it also refuses this socket."""
        await self._sio.save_session(
            sid, {"user_id": user.id, "sv": user.session_version, "session_id": session_id, "chats": set()}
        )
        self._cache[(user.id, user.session_version, session_id)] = (time.monotonic() + CACHE_SECONDS, user)

    async def user(self, sid: str) -> Principal:
        session = await self._sio.get_session(sid)
        if not session or "user_id" not in session:
            raise Unauthorized("socket is not authenticated")
        return await self.lookup(session["user_id"], session["sv"], session.get("session_id"))

    async def lookup(self, user_id: UUID, session_version: int, session_id: UUID | None = None) -> Principal:
        """The live, unbanned user of an unrevoked session (cached a few seconds: a reconnect burst costs
        one query per user)."""
        key = (user_id, session_version, session_id)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        user = await self._auth.active_user(*key)
        if len(self._cache) > 10_000:  # bound memory: drop expired entries
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + CACHE_SECONDS, user)
        return user

    async def joined(self, sid: str) -> set[str]:
        session = await self._sio.get_session(sid)
        chats: set[str] = session.get("chats", set()) if session else set()
        return chats
