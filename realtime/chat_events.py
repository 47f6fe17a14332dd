"""Socket events of a chat: join, leave, send, sync, typing. Thin: validate, call ChatService, ack."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import socketio
from pydantic import Field

from core.entities import Principal
from core.errors import Forbidden
from realtime.acks import EventRegistry, Payload
from realtime.guard import SocketUsers
from services.chat import ChatService
from services.events import chat_room
from services.replies import ReplyService
from storage.chat import public_message, public_session

MAX_SEQ = 2**63 - 1  # seqs are PostgreSQL bigints


class SessionRef(Payload):
    session_id: UUID


class SendIn(Payload):
    session_id: UUID
    client_id: UUID
    # The configured MESSAGE_MAX_CHARS is enforced by the service; this only stops absurd payloads early.
    content: str = Field(min_length=1, max_length=200_000)


class SyncIn(Payload):
    session_id: UUID
    after_seq: int = Field(ge=0, le=MAX_SEQ)


class TypingIn(Payload):
    session_id: UUID
    typing: bool


def register(
    sio: socketio.AsyncServer, events: EventRegistry, *, chat: ChatService, replies: ReplyService, users: SocketUsers
) -> None:
    @events.on("chat:join", SessionRef)
    async def join(sid: str, user: Principal, payload: SessionRef) -> dict[str, Any]:
        session = await chat.get_session(user, payload.session_id)
        await sio.enter_room(sid, chat_room(session.id))
        (await users.joined(sid)).add(str(session.id))
        return {"session": public_session(session)}

    @events.on("chat:leave", SessionRef)
    async def leave(sid: str, user: Principal, payload: SessionRef) -> dict[str, Any]:
        await sio.leave_room(sid, chat_room(payload.session_id))
        (await users.joined(sid)).discard(str(payload.session_id))
        return {}

    @events.on("message:send", SendIn)
    async def send(sid: str, user: Principal, payload: SendIn) -> dict[str, Any]:
        result = await chat.send(user, payload.session_id, client_id=payload.client_id, content=payload.content)
        return {"message": public_message(result.message), "duplicate": not result.created}

    @events.on("sync", SyncIn)
    async def sync(sid: str, user: Principal, payload: SyncIn) -> dict[str, Any]:
        result = await chat.sync(user, payload.session_id, after_seq=payload.after_seq)
        return {
            "messages": [public_message(m) for m in result.messages],
            "has_more": result.has_more,
            "last_seq": result.last_seq,
            "streams": await replies.live_streams(payload.session_id),
        }

    @events.on("typing", TypingIn)
    async def typing(sid: str, user: Principal, payload: TypingIn) -> dict[str, Any]:
        # Only a socket that joined (so ownership was checked) may signal; relayed, never stored.
        if str(payload.session_id) not in await users.joined(sid):
            raise Forbidden("join the chat before sending typing")
        data = {"session_id": str(payload.session_id), "user_id": str(user.id), "typing": payload.typing}
        await sio.emit("typing", data, room=chat_room(payload.session_id), skip_sid=sid)
        return {}
