"""Experiment: the ceiling of Python on aiohttp for the bench's relay. Engine.IO v4 / Socket.IO v5 spoken
directly on aiohttp's websocket (websocket transport only, default namespace, JSON packets), with the
py relay's chat events, rooms and in-memory sessions. No python-socketio.

`python -m bench.lean_relay` with env HOST, PORT."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import defaultdict
from typing import Any

import uvloop
from aiohttp import WSMsgType, web

from bench.py_relay import SYNC_PAGE, Session, _invalid, _ok, send_error

PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0


class Conn:
    __slots__ = ("rooms", "sid", "user_id", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.sid = uuid.uuid4().hex
        self.user_id = ""
        self.rooms: set[str] = set()


class Relay:
    def __init__(self) -> None:
        self.rooms: dict[str, set[Conn]] = defaultdict(set)
        self.sessions: dict[str, Session] = {}

    def session(self, session_id: str) -> Session:
        found = self.sessions.get(session_id)
        if found is None:
            found = self.sessions[session_id] = Session(session_id)
        return found

    def join(self, conn: Conn, room: str) -> None:
        self.rooms[room].add(conn)
        conn.rooms.add(room)

    def leave(self, conn: Conn, room: str) -> None:
        self.rooms[room].discard(conn)
        conn.rooms.discard(room)

    async def emit(self, event: str, data: Any, rooms: list[str], skip: Conn | None = None) -> None:
        frame = "42" + json.dumps([event, data], separators=(",", ":"))
        seen: set[Conn] = set()
        for room in rooms:
            for conn in self.rooms.get(room, ()):
                if conn is skip or conn in seen:
                    continue
                seen.add(conn)
                try:
                    await conn.ws.send_str(frame)
                except ConnectionError:
                    pass

    async def handle(self, conn: Conn, event: str, data: Any) -> dict[str, Any]:
        if event == "message:send":
            error = send_error(data)
            if error is not None:
                return error
            s = self.session(data["session_id"])
            message, duplicate = s.store(data["client_id"], data["content"])
            if duplicate:
                return _ok(message=message, duplicate=True)
            await self.emit("message:new", {"message": message}, [f"user:{conn.user_id}", f"chat:{s.id}"])
            return _ok(message=message, duplicate=False)
        if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
            return _invalid("session_id: required")
        if event == "chat:join":
            self.join(conn, f"chat:{data['session_id']}")
            return _ok(session=self.session(data["session_id"]).public())
        if event == "chat:leave":
            self.leave(conn, f"chat:{data['session_id']}")
            return _ok()
        if event == "sync":
            after = data.get("after_seq")
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                return _invalid("after_seq: required")
            s = self.session(data["session_id"])
            rows = s.messages[after : after + SYNC_PAGE + 1]
            return _ok(messages=rows[:SYNC_PAGE], has_more=len(rows) > SYNC_PAGE, last_seq=s.last_seq, streams=[])
        if event == "typing":
            payload = {"session_id": data["session_id"], "user_id": conn.user_id, "typing": bool(data.get("typing"))}
            await self.emit("typing", payload, [f"chat:{data['session_id']}"], skip=conn)
            return _ok()
        return _invalid("unknown event")

    async def run_event(self, conn: Conn, ack_id: str, event: str, data: Any) -> None:
        result = await self.handle(conn, event, data)
        if ack_id:
            try:
                await conn.ws.send_str("43" + ack_id + json.dumps([result], separators=(",", ":")))
            except ConnectionError:
                pass

    async def pinger(self, conn: Conn) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            await conn.ws.send_str("2")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(receive_timeout=PING_INTERVAL + PING_TIMEOUT, max_msg_size=2_000_000)
        await ws.prepare(request)
        conn = Conn(ws)
        await ws.send_str(
            "0"
            + json.dumps(
                {
                    "sid": conn.sid,
                    "upgrades": [],
                    "pingInterval": int(PING_INTERVAL * 1000),
                    "pingTimeout": int(PING_TIMEOUT * 1000),
                    "maxPayload": 2_000_000,
                }
            )
        )
        pinger = asyncio.ensure_future(self.pinger(conn))
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                text: str = msg.data
                if text.startswith("42"):
                    i = 2
                    while i < len(text) and text[i].isdigit():
                        i += 1
                    ack_id = text[2:i]
                    args = json.loads(text[i:])
                    data = args[1] if len(args) > 1 else None
                    task = asyncio.ensure_future(self.run_event(conn, ack_id, args[0], data))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif text == "3":
                    pass
                elif text.startswith("40"):
                    auth = json.loads(text[2:]) if len(text) > 2 else None
                    token = auth.get("token") if isinstance(auth, dict) else None
                    if not isinstance(token, str) or not token:
                        await ws.send_str('44{"message":"missing access token"}')
                        continue
                    conn.user_id = token
                    self.join(conn, f"user:{token}")
                    await ws.send_str("40" + json.dumps({"sid": conn.sid}))
                elif text.startswith("41") or text == "1":
                    break
        finally:
            pinger.cancel()
            for room in list(conn.rooms):
                self.leave(conn, room)
        return ws


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    relay = Relay()
    app.router.add_get("/socket.io/", relay.websocket)
    app.router.add_get("/healthz", _healthz)
    return app


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8092")),
        backlog=2048,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
