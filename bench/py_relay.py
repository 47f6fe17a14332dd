"""Comparator for the bench: the floor of Parlor's own stack. A bare python-socketio relay on aiohttp with
Parlor's chat events (docs/events.md), the same acks and rooms and the same AsyncServer options, but no
token check beyond "present" and no database: messages live in memory.

`python -m bench.py_relay` with env HOST, PORT, REDIS_URL (optional: AsyncRedisManager for several
processes), REDIS_PREFIX. It runs on the same event loop as `python -m server`: uvloop (RELAY_UVLOOP=0
for asyncio's own loop)."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
import uvloop
from aiohttp import web

SYNC_PAGE = 500


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Session:
    id: str
    last_seq: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    by_client: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def store(self, client_id: str, content: str) -> tuple[dict[str, Any], bool]:
        """(message, duplicate): the stored message of this client_id, or a new one numbered next."""
        existing = self.by_client.get(client_id)
        if existing is not None:
            return existing, True
        self.last_seq += 1
        message = {
            "id": str(uuid.uuid4()),
            "session_id": self.id,
            "seq": self.last_seq,
            "role": "user",
            "content": content,
            "status": "complete",
            "client_id": client_id,
            "reply_to": None,
            "usage": None,
            "attachments": [],
            "created_at": _now(),
        }
        self.messages.append(message)
        self.by_client[client_id] = message
        return message, False

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "persona_id": None,
            "title": "bench",
            "pinned": False,
            "last_seq": self.last_seq,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }


def _ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def _invalid(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "invalid", "message": message}}


def send_error(data: Any) -> dict[str, Any] | None:
    """The error ack for a malformed `message:send` payload, or None."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("session_id", "client_id")):
        return _invalid("session_id, client_id: required")
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        return _invalid("content: required")
    return None


def _chat_id(data: Any) -> str | None:
    """The `session_id` a payload names, or None when it names none."""
    session_id = data.get("session_id") if isinstance(data, dict) else None
    return session_id if isinstance(session_id, str) else None


def _server(redis_url: str | None, prefix: str) -> socketio.AsyncServer:
    manager = None
    if redis_url:
        manager = socketio.AsyncRedisManager(
            redis_url,
            channel=f"{prefix}:socketio",
            redis_options={"socket_keepalive": True, "health_check_interval": 30},
        )
    # The options of realtime/server.py, so the floor is our own stack as configured.
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins="*",
        max_http_buffer_size=2_000_000,
        compression_threshold=4096,
        logger=False,
        engineio_logger=False,
    )


class Relay:
    """Parlor's chat events on `sio`, with the chats in memory."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.sessions: dict[str, Session] = {}

    def session(self, session_id: str) -> Session:
        found = self.sessions.get(session_id)
        if found is None:
            found = self.sessions[session_id] = Session(session_id)
        return found

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError(
                "missing access token: connect with auth {token}", {"code": "unauthorized"}
            )
        # Any token is accepted; it names the user.
        await self.sio.save_session(sid, {"user_id": token, "chats": set()})
        await self.sio.enter_room(sid, f"user:{token}")

    async def join(self, sid: str, data: Any = None) -> dict[str, Any]:
        chat_id = _chat_id(data)
        if chat_id is None:
            return _invalid("session_id: required")
        await self.sio.enter_room(sid, f"chat:{chat_id}")
        (await self.sio.get_session(sid))["chats"].add(chat_id)
        return _ok(session=self.session(chat_id).public())

    async def leave(self, sid: str, data: Any = None) -> dict[str, Any]:
        chat_id = _chat_id(data)
        if chat_id is None:
            return _invalid("session_id: required")
        await self.sio.leave_room(sid, f"chat:{chat_id}")
        (await self.sio.get_session(sid))["chats"].discard(chat_id)
        return _ok()

    async def send(self, sid: str, data: Any = None) -> dict[str, Any]:
        error = send_error(data)
        if error is not None:
            return error
        user_id = (await self.sio.get_session(sid))["user_id"]
        s = self.session(data["session_id"])
        message, duplicate = s.store(data["client_id"], data["content"])
        if duplicate:
            return _ok(message=message, duplicate=True)
        # Once to each socket of the user and each socket in the chat room, as Parlor does.
        await self.sio.emit("message:new", {"message": message}, room=[f"user:{user_id}", f"chat:{s.id}"])
        return _ok(message=message, duplicate=False)

    async def sync(self, sid: str, data: Any = None) -> dict[str, Any]:
        chat_id = _chat_id(data)
        if chat_id is None:
            return _invalid("session_id: required")
        after = data.get("after_seq")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            return _invalid("after_seq: required")
        s = self.session(chat_id)
        rows = s.messages[after : after + SYNC_PAGE + 1]  # seq n is at index n-1
        return _ok(messages=rows[:SYNC_PAGE], has_more=len(rows) > SYNC_PAGE, last_seq=s.last_seq, streams=[])

    async def typing(self, sid: str, data: Any = None) -> dict[str, Any]:
        chat_id = _chat_id(data)
        if chat_id is None:
            return _invalid("session_id: required")
        user_id = (await self.sio.get_session(sid))["user_id"]
        payload = {"session_id": chat_id, "user_id": user_id, "typing": bool(data.get("typing"))}
        await self.sio.emit("typing", payload, room=f"chat:{chat_id}", skip_sid=sid)
        return _ok()


def create_sio(redis_url: str | None, prefix: str) -> socketio.AsyncServer:
    sio = _server(redis_url, prefix)
    relay = Relay(sio)
    sio.on("connect", relay.connect)
    sio.on("chat:join", relay.join)
    sio.on("chat:leave", relay.leave)
    sio.on("message:send", relay.send)
    sio.on("sync", relay.sync)
    sio.on("typing", relay.typing)
    return sio


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    sio = create_sio(os.environ.get("REDIS_URL") or None, os.environ.get("REDIS_PREFIX", "relay"))
    sio.attach(app, socketio_path="socket.io")
    app.router.add_get("/healthz", _healthz)
    return app


def main() -> None:
    if os.environ.get("RELAY_UVLOOP", "1") == "1":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8091")),
        backlog=2048,  # same accept queue as Parlor, so the reconnect storm compares like for like
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
