"""The socket event contract as models: one per server → client event (its Socket.IO name in `name`), the
client → server payloads with their acks, and the `Events` protocol services emit through (implemented in
realtime/emitter.py, so services never import socketio).

An event is validated once, when it is built; the emitter serialises it once (`model_dump(mode="json")`).
These models are the source of docs/events.md's tables and of the AsyncAPI document (GET
/api/asyncapi.json); tests/helpers.py `Inbox` validates every event a test receives against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core import limits
from core.validation import INT64_MAX
from core.wire import AttachmentIds, JobStatus, MessageOut, NotificationOut, SessionOut, Timestamp, TokenUsage, Wire


def user_room(user_id: UUID | str) -> str:
    """Every socket of one user."""
    return f"user:{user_id}"


def chat_room(session_id: UUID | str) -> str:
    """Every socket watching one chat session."""
    return f"chat:{session_id}"


# --- server → client -------------------------------------------------------------------------------

AiErrorCode = Literal[
    "provider_rate_limited",
    "provider_unavailable",
    "provider_timeout",
    "provider_auth",
    "provider_error",
    "empty_reply",
    "stream_gone",
    "reply_lost",
    "internal",
]
EndReason = Literal["logged_out", "password_changed", "banned"]


class ServerEvent(Wire):
    """An event the server sends; `name` is its Socket.IO event name."""

    name: ClassVar[str]


class MessageNewEvent(ServerEvent):
    """A user message was stored: to every socket of the user and of the chat room, once each, after commit."""

    name = "message:new"
    message: MessageOut


class AiStartEvent(ServerEvent):
    """A reply began: to the user's sockets and the chat room. `message` is the reply's row (streaming). A
    regeneration streams into an existing message: `message_id` names it and `variant` is the new variant's
    index (a new reply: its own id, variant 0; a continuation: the reply's selected variant)."""

    name = "ai:start"
    stream_id: UUID
    session_id: UUID
    reply_to: UUID | None
    message_id: UUID
    variant: int = Field(ge=0)
    message: MessageOut


class AiChunkEvent(ServerEvent):
    """The next piece of a reply's text: to the chat room; `index` starts at 0 and has no gaps."""

    name = "ai:chunk"
    stream_id: UUID
    index: int = Field(ge=0)
    text: str


class AiDoneEvent(ServerEvent):
    """The stored reply (complete or stopped) and its token usage: to the user's sockets and the chat room."""

    name = "ai:done"
    stream_id: UUID
    message: MessageOut
    usage: TokenUsage | None


class AiErrorEvent(ServerEvent):
    """The reply failed: to the user's sockets and the chat room (the row stays, `failed`, empty)."""

    name = "ai:error"
    stream_id: UUID
    code: AiErrorCode
    message: str


class TypingEvent(ServerEvent):
    """Someone is typing: to the chat room, except the sender."""

    name = "typing"
    session_id: UUID
    user_id: UUID
    typing: bool


class PresenceEvent(ServerEvent):
    """The user's first socket connected or last one left (across nodes): to the user's sockets."""

    name = "presence"
    user_id: UUID
    online: bool


class ChatDeletedEvent(ServerEvent):
    """The session was deleted: to the chat room."""

    name = "chat:deleted"
    session_id: UUID


class QuotaEvent(ServerEvent):
    """Today's quota changed: to the user's sockets; `remaining` is null on plans without a daily cap."""

    name = "quota"
    remaining: int | None = Field(ge=0)
    resets_at: Timestamp


class CreditsEvent(ServerEvent):
    """The credit balance changed: to the user's sockets."""

    name = "credits"
    balance: int


class PlanEvent(ServerEvent):
    """The plan changed: to the user's sockets."""

    name = "plan"
    plan: str


class SessionEndedEvent(ServerEvent):
    """The session ended (logout-all, password change, ban): to the user's sockets, closed right after."""

    name = "session:ended"
    reason: EndReason


class NotificationEvent(ServerEvent):
    """A notification was stored for the user: to the user's sockets, after commit."""

    name = "notification"
    notification: NotificationOut


class MessageUpdatedEvent(ServerEvent):
    """A stored message changed (edited, deleted, rewound away, a new variant, another variant selected):
    to the user's sockets and the chat room, once each, after commit. Apply it by `message.id`."""

    name = "message:updated"
    message: MessageOut


class JobProgressEvent(ServerEvent):
    """A job of the user changed (queued, started, progressed, retried, ended): to the user's sockets,
    after commit; progress changes at most a few times a second per job."""

    name = "job:progress"
    job_id: UUID
    kind: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    step: str | None
    attempts: int
    result: dict[str, Any] | None = Field(description="With status succeeded: what the job produced")
    error: str | None
    updated_at: Timestamp


SERVER_EVENTS: dict[str, type[ServerEvent]] = {
    event.name: event
    for event in (
        MessageNewEvent,
        AiStartEvent,
        AiChunkEvent,
        AiDoneEvent,
        AiErrorEvent,
        TypingEvent,
        PresenceEvent,
        ChatDeletedEvent,
        QuotaEvent,
        CreditsEvent,
        PlanEvent,
        SessionEndedEvent,
        NotificationEvent,
        JobProgressEvent,
        MessageUpdatedEvent,
    )
}


class Events(Protocol):
    async def to_user(self, user_id: UUID, event: ServerEvent) -> None:
        """Every socket of the user, on any node."""

    async def to_room(self, room: str, event: ServerEvent, *, skip_sid: str | None = None) -> None:
        """Every socket in a room, on any node."""

    async def to_rooms(self, rooms: list[str], event: ServerEvent) -> None:
        """Every socket in any of the rooms, once even when it is in several."""

    async def disconnect_user(self, user_id: UUID, *, reason: EndReason) -> None:
        """Tell the user's sockets their session ended (`session:ended`) and close them."""


# --- client → server -------------------------------------------------------------------------------


class ClientPayload(BaseModel):
    """Socket payloads: unknown fields refused, like REST bodies."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SessionRef(ClientPayload):
    session_id: UUID


class SendIn(ClientPayload):
    session_id: UUID
    client_id: UUID
    # The configured MESSAGE_MAX_CHARS is enforced by the service; this only stops absurd payloads early.
    content: str = Field(min_length=1, max_length=limits.MESSAGE_BODY_MAX)
    attachments: AttachmentIds = []


class SyncIn(ClientPayload):
    """`after_seq`: new messages only (what a client that never changes messages needs). `after_rev`: every
    message inserted or changed since (tombstones too). One of the two."""

    session_id: UUID
    after_seq: int | None = Field(default=None, ge=0, le=INT64_MAX)  # seqs and revs are PostgreSQL bigints
    after_rev: int | None = Field(default=None, ge=0, le=INT64_MAX)

    @model_validator(mode="after")
    def _one_position(self) -> SyncIn:
        if (self.after_seq is None) == (self.after_rev is None):
            raise ValueError("give after_seq or after_rev (one of them)")
        return self


class MessageRef(ClientPayload):
    message_id: UUID


class EditIn(ClientPayload):
    message_id: UUID
    content: str = Field(min_length=1, max_length=limits.MESSAGE_BODY_MAX)
    regenerate: bool = Field(
        default=False, description="On the newest user message: the reply after it gets a new variant"
    )


class SelectIn(ClientPayload):
    message_id: UUID
    variant: int = Field(ge=0, le=INT64_MAX)


class RewindIn(ClientPayload):
    session_id: UUID
    to_seq: int = Field(ge=0, le=INT64_MAX, description="Every message after this seq becomes a tombstone")


class TypingIn(ClientPayload):
    session_id: UUID
    typing: bool


class StopIn(ClientPayload):
    stream_id: UUID


class ResumeIn(ClientPayload):
    stream_id: UUID
    from_index: int = Field(default=0, ge=0, le=INT64_MAX)


class AckError(Wire):
    code: str
    message: str
    details: list[Any] | None = None  # with `invalid`: every bad field


class ErrorAck(Wire):
    """What every client event answers when it fails."""

    ok: Literal[False] = False
    error: AckError


class OkAck(Wire):
    ok: Literal[True] = True


class JoinAck(OkAck):
    session: SessionOut


class SendAck(OkAck):
    message: MessageOut
    duplicate: bool


class StreamInFlight(Wire):
    stream_id: UUID
    session_id: UUID
    reply_to: UUID | None
    next_index: int = Field(ge=0)


class SyncAck(OkAck):
    messages: list[MessageOut]
    has_more: bool
    last_seq: int = Field(ge=0)
    last_rev: int = Field(ge=0, description="The session's newest rev: the next `sync {after_rev}` starts here")
    streams: list[StreamInFlight]


class MessageAck(OkAck):
    message: MessageOut


class RewindAck(OkAck):
    deleted: int = Field(ge=0, description="How many messages became tombstones")
    last_rev: int = Field(ge=0)


class StopAck(OkAck):
    stream_id: UUID


class ResumeAck(OkAck):
    stream_id: UUID
    session_id: UUID
    from_index: int = Field(ge=0)


@dataclass(frozen=True)
class ClientEvent:
    name: str
    payload: type[ClientPayload]
    ack: type[OkAck]
    summary: str


CLIENT_EVENTS: dict[str, ClientEvent] = {
    event.name: event
    for event in (
        ClientEvent("chat:join", SessionRef, JoinAck, "Watch a chat session (join its room)."),
        ClientEvent("chat:leave", SessionRef, OkAck, "Stop watching a chat session."),
        ClientEvent(
            "message:send", SendIn, SendAck, "Store a user message (deduplicated on client_id); acked after commit."
        ),
        ClientEvent(
            "sync",
            SyncIn,
            SyncAck,
            "Messages after a seq (new ones, oldest first) or after a rev (every change since, in rev order), at "
            "most 500; streams in flight.",
        ),
        ClientEvent(
            "message:edit",
            EditIn,
            MessageAck,
            "Change a message's text in place (edited_at set); with regenerate on the newest user message, the "
            "reply after it gets a new variant.",
        ),
        ClientEvent("message:delete", MessageRef, MessageAck, "Turn a message into a tombstone (its seq kept)."),
        ClientEvent(
            "message:select", SelectIn, MessageAck, "Pick the variant of a reply that counts (and reaches the prompt)."
        ),
        ClientEvent(
            "chat:rewind",
            RewindIn,
            RewindAck,
            "Turn every message after to_seq into a tombstone (a reply stops first).",
        ),
        ClientEvent(
            "ai:regenerate", MessageRef, MessageAck, "Stream a new variant of the chat's newest reply (all kept)."
        ),
        ClientEvent("ai:continue", MessageRef, MessageAck, "Stream more text onto the chat's newest reply."),
        ClientEvent("typing", TypingIn, OkAck, "Relay typing to the chat room (only after chat:join)."),
        ClientEvent("ai:stop", StopIn, StopAck, "Stop a reply wherever it runs; the text so far is kept."),
        ClientEvent(
            "ai:resume", ResumeIn, ResumeAck, "Replay a live stream's chunks from from_index, then follow it live."
        ),
    )
}
