"""Socket events of a chat: join, leave, send, sync (by seq or by rev), typing. Thin: validate, call the
service, ack."""

from __future__ import annotations

import socketio

from core.entities import Principal
from core.errors import Forbidden
from core.events import JoinAck, OkAck, SendAck, SendIn, SessionRef, SyncAck, SyncIn, TypingEvent, TypingIn, chat_room
from core.wire import MessageOut, SessionOut
from realtime.acks import EventRegistry
from realtime.emitter import SocketEvents
from realtime.guard import SocketUsers
from services.chat import ChatService, SyncResult
from services.conversation import ConversationService, RevSync
from services.replies import ReplyService


def register(
    sio: socketio.AsyncServer,
    events: EventRegistry,
    *,
    chat: ChatService,
    replies: ReplyService,
    conversation: ConversationService,
    users: SocketUsers,
) -> None:
    emitter = SocketEvents(sio)

    @events.on("chat:join", SessionRef)
    async def join(sid: str, user: Principal, payload: SessionRef) -> JoinAck:
        session = await chat.get_session(user, payload.session_id)
        await sio.enter_room(sid, chat_room(session.id))
        (await users.joined(sid)).add(str(session.id))
        return JoinAck(session=SessionOut.model_validate(session))

    @events.on("chat:leave", SessionRef)
    async def leave(sid: str, user: Principal, payload: SessionRef) -> OkAck:
        await sio.leave_room(sid, chat_room(payload.session_id))
        (await users.joined(sid)).discard(str(payload.session_id))
        return OkAck()

    @events.on("message:send", SendIn)
    async def send(sid: str, user: Principal, payload: SendIn) -> SendAck:
        result = await chat.send(
            user,
            payload.session_id,
            client_id=payload.client_id,
            content=payload.content,
            attachments=payload.attachments,
        )
        return SendAck(message=MessageOut.model_validate(result.message), duplicate=not result.created)

    @events.on("sync", SyncIn)
    async def sync(sid: str, user: Principal, payload: SyncIn) -> SyncAck:
        if payload.after_rev is not None:
            result: SyncResult | RevSync = await conversation.sync(
                user, payload.session_id, after_rev=payload.after_rev
            )
        else:
            result = await chat.sync(user, payload.session_id, after_seq=payload.after_seq or 0)
        return SyncAck(
            messages=[MessageOut.model_validate(m) for m in result.messages],
            has_more=result.has_more,
            last_seq=result.last_seq,
            last_rev=result.last_rev,
            streams=await replies.live_streams(payload.session_id),
        )

    @events.on("typing", TypingIn)
    async def typing(sid: str, user: Principal, payload: TypingIn) -> OkAck:
        # Only a socket that joined (so ownership was checked) may signal; relayed, never stored.
        if str(payload.session_id) not in await users.joined(sid):
            raise Forbidden("join the chat before sending typing")
        event = TypingEvent(session_id=payload.session_id, user_id=user.id, typing=payload.typing)
        await emitter.to_room(chat_room(payload.session_id), event, skip_sid=sid)
        return OkAck()
