"""Socket events that change a conversation: edit, select a variant, delete, rewind, regenerate, continue.
Thin: validate, call the service, ack. (Sync by rev is the `sync` event in chat_events.py.)"""

from __future__ import annotations

from core.entities import Principal
from core.events import EditIn, MessageAck, MessageRef, RewindAck, RewindIn, SelectIn
from core.wire import MessageOut
from realtime.acks import EventRegistry
from services.conversation import ConversationService
from services.replies import ReplyService


def register(events: EventRegistry, *, conversation: ConversationService, replies: ReplyService) -> None:
    @events.on("message:edit", EditIn)
    async def edit(sid: str, user: Principal, payload: EditIn) -> MessageAck:
        message = await conversation.edit(user, payload.message_id, payload.content, regenerate=payload.regenerate)
        return MessageAck(message=MessageOut.model_validate(message))

    @events.on("ai:regenerate", MessageRef)
    async def regenerate(sid: str, user: Principal, payload: MessageRef) -> MessageAck:
        """The ack carries the message as it starts streaming its new variant; ai:start follows."""
        message = await replies.regenerate(user, payload.message_id)
        return MessageAck(message=MessageOut.model_validate(message))

    @events.on("ai:continue", MessageRef)
    async def continue_reply(sid: str, user: Principal, payload: MessageRef) -> MessageAck:
        message = await replies.continue_reply(user, payload.message_id)
        return MessageAck(message=MessageOut.model_validate(message))

    @events.on("message:delete", MessageRef)
    async def delete(sid: str, user: Principal, payload: MessageRef) -> MessageAck:
        message = await conversation.delete(user, payload.message_id)
        return MessageAck(message=MessageOut.model_validate(message))

    @events.on("message:select", SelectIn)
    async def select(sid: str, user: Principal, payload: SelectIn) -> MessageAck:
        message = await conversation.select(user, payload.message_id, payload.variant)
        return MessageAck(message=MessageOut.model_validate(message))

    @events.on("chat:rewind", RewindIn)
    async def rewind(sid: str, user: Principal, payload: RewindIn) -> RewindAck:
        rewound = await conversation.rewind(user, payload.session_id, payload.to_seq)
        return RewindAck(deleted=len(rewound.tombstones), last_rev=rewound.last_rev)
