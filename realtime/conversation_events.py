"""Socket events that change a conversation: edit, select a variant, delete, rewind. Thin: validate, call
ConversationService, ack. (Sync by rev is the `sync` event in chat_events.py.)"""

from __future__ import annotations

from core.entities import Principal
from core.events import EditIn, MessageAck, MessageRef, RewindAck, RewindIn, SelectIn
from core.wire import MessageOut
from realtime.acks import EventRegistry
from services.conversation import ConversationService


def register(events: EventRegistry, *, conversation: ConversationService) -> None:
    @events.on("message:edit", EditIn)
    async def edit(sid: str, user: Principal, payload: EditIn) -> MessageAck:
        message = await conversation.edit(user, payload.message_id, payload.content)
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
