"""REST: /api/v1/chat — sessions, history, and the send fallback for clients without a socket."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from core import limits
from core.entities import Principal
from core.pages import Position, decode_cursor, encode_cursor
from core.validation import INT64_MAX, Bigint, PositiveBigint
from core.wire import AttachmentIds, JobOut, MessageOut, SessionOut
from handlers.api import Api, model_response, path_uuid
from handlers.keys import CHAT_EXPORTS, CHAT_SERVICE, CONVERSATION_SERVICE, REPLY_SERVICE
from handlers.schemas import CursorParam, MessageContent, NonEmptyPatch, Strict

api = Api("chat")
P = "/api/v1/chat/sessions"


class SessionIn(Strict):
    persona_id: UUID
    title: str | None = Field(default=None, min_length=1, max_length=limits.SESSION_TITLE_MAX)


class SessionPatch(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=limits.SESSION_TITLE_MAX)
    pinned: bool | None = None


class _SessionPosition(Position):
    """Where a page of the session list ended, in list order (pinned, updated_at, id)."""

    pinned: bool
    updated_at: datetime
    id: UUID


class ListQuery(Strict):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class HistoryQuery(Strict):
    after_seq: Bigint | None = Field(default=None, description="Messages after this seq, oldest first")
    before_seq: PositiveBigint | None = Field(default=None, description="Messages before this seq, newest page")
    limit: int = Field(default=50, ge=1, le=200)


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class SendIn(Strict):
    client_id: UUID
    content: MessageContent
    attachments: AttachmentIds = []


@api.route("GET", P, summary="My chat sessions, pinned first, then most recent", query=ListQuery, response=SessionPage)
async def list_sessions(request: web.Request, user: Principal, query: ListQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, _SessionPosition)
    after = (position.pinned, position.updated_at, position.id) if position else None
    rows = await request.app[CHAT_SERVICE].list_sessions(user, after=after, limit=query.limit)
    last = rows[-1] if len(rows) == query.limit else None
    cursor = (
        encode_cursor(_SessionPosition(pinned=last.pinned, updated_at=last.updated_at, id=last.id)) if last else None
    )
    return {"items": [SessionOut.model_validate(r) for r in rows], "next_cursor": cursor}


@api.route(
    "POST", P, summary="Start a chat with a persona", body=SessionIn, response=SessionOut, status=201, errors=(404,)
)
async def create_session(request: web.Request, user: Principal, body: SessionIn) -> SessionOut:
    """The persona must be the caller's own or public (otherwise 404). The title defaults to its name."""
    session = await request.app[CHAT_SERVICE].create_session(user, persona_id=body.persona_id, title=body.title)
    return SessionOut.model_validate(session)


@api.route("GET", f"{P}/{{id}}", summary="One of my chat sessions", response=SessionOut, errors=(404,))
async def get_session(request: web.Request, user: Principal) -> SessionOut:
    return SessionOut.model_validate(await request.app[CHAT_SERVICE].get_session(user, path_uuid(request)))


@api.route(
    "PATCH",
    f"{P}/{{id}}",
    summary="Rename or pin a chat session",
    body=SessionPatch,
    response=SessionOut,
    errors=(404,),
)
async def update_session(request: web.Request, user: Principal, body: SessionPatch) -> SessionOut:
    session = await request.app[CHAT_SERVICE].update_session(
        user, path_uuid(request), title=body.title, pinned=body.pinned
    )
    return SessionOut.model_validate(session)


@api.route("DELETE", f"{P}/{{id}}", summary="Delete a chat session and its messages", status=204, errors=(404,))
async def delete_session(request: web.Request, user: Principal) -> None:
    await request.app[CHAT_SERVICE].delete_session(user, path_uuid(request))


@api.route(
    "GET",
    f"{P}/{{id}}/messages",
    summary="History by seq, either direction",
    query=HistoryQuery,
    response=MessagePage,
    errors=(404,),
)
async def history(request: web.Request, user: Principal, query: HistoryQuery) -> dict[str, Any]:
    """`after_seq` (default 0) pages forward: pass `next_cursor` as the next `after_seq`. `before_seq`
    pages backward from the newest: pass `next_cursor` as the next `before_seq`. Both: the messages
    between them, paged forward (pass `next_cursor` as the next `after_seq`, keep `before_seq`). Items
    are always in ascending seq order."""
    window = query.after_seq is not None and query.before_seq is not None
    rows = await request.app[CHAT_SERVICE].history(
        user,
        path_uuid(request),
        after_seq=query.after_seq,
        before_seq=None if window else query.before_seq,
        limit=query.limit,
    )
    more = len(rows) == query.limit
    if window:
        assert query.before_seq is not None
        kept = [m for m in rows if m.seq < query.before_seq]
        more, rows = more and len(kept) == len(rows), kept  # seq is gap-free: a cut means the end
    cursor = None
    if more:
        cursor = str(rows[0].seq if query.before_seq is not None and not window else rows[-1].seq)
    return {"items": [MessageOut.model_validate(m) for m in rows], "next_cursor": cursor}


@api.route(
    "POST",
    f"{P}/{{id}}/messages",
    summary="Send a message (REST fallback of message:send)",
    body=SendIn,
    response=MessageOut,
    status=201,
    other_statuses={200: MessageOut},
    errors=(404, 422, 429),
)
async def send_message(request: web.Request, user: Principal, body: SendIn) -> Any:
    """Same semantics as the socket event: a repeated `client_id` returns the stored message with 200
    and triggers nothing; a new message answers 201 and reaches the user's sockets as `message:new`."""
    result = await request.app[CHAT_SERVICE].send(
        user, path_uuid(request), client_id=body.client_id, content=body.content, attachments=body.attachments
    )
    if not result.created:
        return web.json_response(MessageOut.model_validate(result.message).model_dump(mode="json"), status=200)
    return MessageOut.model_validate(result.message)


class ChatExportIn(Strict):
    format: Literal["json", "txt", "pdf"]


@api.route(
    "POST",
    f"{P}/{{id}}/export",
    summary="Export a chat as JSON, TXT or PDF (a job)",
    body=ChatExportIn,
    response=JobOut,
    status=202,
    errors=(404, 429),
)
async def export_session(request: web.Request, user: Principal, body: ChatExportIn) -> web.Response:
    """Answers 202 with the job at once; `job:progress` events follow it (GET /jobs/{id} without a socket).
    Its result holds a signed `url` to the file: JSON with every message as the history returns it, a TXT
    transcript, or a PDF that keeps every character (any script, emoji included)."""
    job = await request.app[CHAT_EXPORTS].start(user, path_uuid(request), body.format)
    return model_response(JobOut.model_validate(job), status=202)


class MessagePatch(NonEmptyPatch):
    """At least one of content and variant (regenerate goes with content)."""

    needs_one_of = ("content", "variant")

    content: MessageContent | None = Field(default=None, description="The message's new text (edited_at is set)")
    variant: int | None = Field(default=None, ge=0, le=INT64_MAX, description="The variant of a reply that counts")
    regenerate: bool | None = Field(
        default=None, description="With content, on the newest user message: the reply after it gets a new variant"
    )


class RewindBody(Strict):
    to_seq: Bigint = Field(ge=0, description="Every message after this seq becomes a tombstone")


class ForkBody(Strict):
    at_seq: PositiveBigint = Field(description="The new session holds copies of the messages up to this seq")


class RewindOut(BaseModel):
    deleted: int = Field(description="How many messages became tombstones")
    last_rev: int


@api.route(
    "PATCH",
    f"{P}/{{id}}/messages/{{mid}}",
    summary="Edit a message of my chat",
    body=MessagePatch,
    response=MessageOut,
    errors=(404, 409),
)
async def edit_message(request: web.Request, user: Principal, body: MessagePatch) -> MessageOut:
    """`variant`: that variant of the reply counts from now on (422 for one it does not have). `content`: the
    text changes in place (`edited_at` set; a reply's selected variant with it). Both: the variant is
    selected, then edited. Each change raises `rev` and is sent as `message:updated`. A reply still
    streaming: 409 `busy`; a deleted message: 409 `conflict`."""
    conversation, message_id, session_id = (
        request.app[CONVERSATION_SERVICE],
        path_uuid(request, "mid"),
        path_uuid(request),
    )
    if body.variant is not None:
        message = await conversation.select(user, message_id, body.variant, session_id=session_id)
    if body.content is not None:
        message = await conversation.edit(
            user, message_id, body.content, session_id=session_id, regenerate=bool(body.regenerate)
        )
    return MessageOut.model_validate(message)


@api.route(
    "DELETE",
    f"{P}/{{id}}/messages/{{mid}}",
    summary="Delete a message of my chat (it stays as a tombstone)",
    response=MessageOut,
    errors=(404, 409),
)
async def delete_message(request: web.Request, user: Principal) -> MessageOut:
    """The message keeps its seq with `status: "deleted"`, no content, no variants (`message:updated` sent);
    deleting it again changes nothing. A reply still streaming: 409 `busy` (stop it, or rewind)."""
    message = await request.app[CONVERSATION_SERVICE].delete(
        user, path_uuid(request, "mid"), session_id=path_uuid(request)
    )
    return MessageOut.model_validate(message)


@api.route(
    "POST",
    f"{P}/{{id}}/rewind",
    summary="Rewind my chat: every message after to_seq becomes a tombstone",
    body=RewindBody,
    response=RewindOut,
    errors=(404, 409),
)
async def rewind(request: web.Request, user: Principal, body: RewindBody) -> dict[str, Any]:
    """A reply streaming in the chat is stopped (and stored) first. `to_seq` past the chat's last seq: 422."""
    rewound = await request.app[CONVERSATION_SERVICE].rewind(user, path_uuid(request), body.to_seq)
    return {"deleted": len(rewound.tombstones), "last_rev": rewound.last_rev}


@api.route(
    "POST",
    f"{P}/{{id}}/fork",
    summary="Fork my chat: a new chat with copies of the messages up to at_seq",
    body=ForkBody,
    response=SessionOut,
    status=201,
    errors=(404,),
)
async def fork(request: web.Request, user: Principal, body: ForkBody) -> SessionOut:
    """Copies keep their seqs, content, variants and tombstones under new ids; the original is untouched.
    `at_seq` past the chat's last seq: 422."""
    session = await request.app[CONVERSATION_SERVICE].fork(user, path_uuid(request), body.at_seq)
    return SessionOut.model_validate(session)


@api.route(
    "POST",
    f"{P}/{{id}}/messages/{{mid}}/regenerate",
    summary="Regenerate my chat's newest reply: a new variant streams (all kept)",
    response=MessageOut,
    status=202,
    errors=(402, 404, 409),
)
async def regenerate(request: web.Request, user: Principal) -> MessageOut:
    """Answers 202 with the message as its new variant starts streaming (`variant` its index); follow it over
    the socket (`ai:start` names the message and variant) or `GET /api/v1/ai/stream/{message id}` (SSE). Charged
    as one AI message, given back if it fails. Not the chat's newest reply: 422; a reply streaming: 409 `busy`;
    quota and credits spent: 402 `quota_exceeded`."""
    message = await request.app[REPLY_SERVICE].regenerate(
        user, path_uuid(request, "mid"), session_id=path_uuid(request)
    )
    return MessageOut.model_validate(message)
