"""REST: /api/v1/ai — the whole reply, the reply as Server-Sent Events (resumable with Last-Event-ID),
sentiment and prompt enhancement. Sending goes through ChatService exactly like `message:send`."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import BaseModel, Field

from core.entities import Message, Principal
from core.errors import AppError, Conflict, NotFound, StreamGone
from core.events import SERVER_EVENTS, AiChunkEvent, AiErrorEvent, AiStartEvent
from core.validation import INT64_MAX, Bigint, whole_number
from core.wire import AttachmentIds, MessageOut
from handlers.api import Api, path_uuid
from handlers.keys import AI_TOOLS, CHAT_SERVICE, REPLY_SERVICE, SETTINGS
from handlers.schemas import MessageContent, Strict
from services.replies import ReplyService

api = Api("ai")
P = "/api/v1/ai"


class ChatIn(Strict):
    session_id: UUID
    client_id: UUID
    content: MessageContent
    attachments: AttachmentIds = []


class TextIn(Strict):
    text: str = Field(min_length=1, max_length=20_000)


class SentimentOut(BaseModel):
    label: str


class EnhanceOut(BaseModel):
    text: str


class ReplyEvent(BaseModel):
    """One Server-Sent Event of a reply stream. `data` is JSON: `start` {stream_id, session_id, reply_to,
    message}, `chunk` {stream_id, index, text}, `done` {stream_id, message, usage}, `error` {stream_id,
    code, message}."""

    event: Literal["start", "chunk", "done", "error"]
    data: str = Field(json_schema_extra={"contentMediaType": "application/json"})
    id: str | None = Field(default=None, pattern=r"^[0-9]+$", description="The chunk index (`chunk` events)")


LastEventId = Annotated[int, Field(ge=0, le=INT64_MAX - 1)]


class ResumeQuery(Strict):
    from_index: Bigint | None = None


async def _send_and_find_reply(request: web.Request, user: Principal, body: ChatIn) -> Message:
    """Store the message (deduplicated by client_id), then wait for the reply that answers it to start
    (it may be queued behind a reply already streaming in this session). A chat whose persona was
    deleted has nobody to answer: 409 `no_persona` at once, before anything is stored."""
    chat = request.app[CHAT_SERVICE]
    session = await chat.get_session(user, body.session_id)
    if session.persona_id is None:
        raise Conflict(
            "this chat's persona was deleted: nobody can reply; start a chat with another persona", code="no_persona"
        )
    result = await chat.send(
        user, body.session_id, client_id=body.client_id, content=body.content, attachments=body.attachments
    )
    replies = request.app[REPLY_SERVICE]
    if not result.created:
        await replies.kick(body.session_id)  # a retry after a failed reply: answer it again
    wait = request.app[SETTINGS].ai_timeout_seconds * 2
    return await replies.reply_for(user, body.session_id, result.message.seq, wait_seconds=wait)


async def _wait_done(replies: ReplyService, reply: Message) -> Message:
    if reply.status == "streaming":
        try:
            async for entry in replies.buffer.follow(str(reply.id), 0):
                if entry.event == "ai:error" and entry.data:
                    raise AppError(entry.data["message"], code=entry.data["code"], status=502)
        except StreamGone:
            pass
    final = await replies.message(reply.id)
    if final is None:
        raise NotFound("reply not found")
    if final.status == "failed":
        raise AppError("the reply failed; send again", code="provider_error", status=502)
    return final


@api.route(
    "POST",
    f"{P}/generate",
    summary="Send a message and get the whole reply",
    body=ChatIn,
    response=MessageOut,
    errors=(404, 409, 429, 502, 504),
)
async def generate(request: web.Request, user: Principal, body: ChatIn) -> MessageOut:
    """The user message is stored like `message:send` (same `client_id` dedupe, same events); the answer
    is the stored assistant reply once complete. Sockets watching the chat see it stream meanwhile."""
    reply = await _send_and_find_reply(request, user, body)
    return MessageOut.model_validate(await _wait_done(request.app[REPLY_SERVICE], reply))


async def _stream_sse(
    request: web.Request, replies: ReplyService, stream_id: str, from_index: int, start: AiStartEvent | None
) -> web.StreamResponse:
    """The reply's socket events as SSE: `start`, `chunk`, then `done` or `error`, each the event model's JSON."""
    stream_uuid = UUID(stream_id)
    # POST too: the stream answers the message this very request sends.
    async with sse_response(request, headers={"X-Accel-Buffering": "no"}, allow_all_methods=True) as sse:
        if start is not None:
            await sse.send(start.model_dump_json(), event="start")
        try:
            async for entry in replies.buffer.follow(stream_id, from_index):
                if entry.event is None:
                    chunk = AiChunkEvent(stream_id=stream_uuid, index=entry.index, text=entry.text)
                    await sse.send(chunk.model_dump_json(), id=str(entry.index), event="chunk")
                else:  # the end event as the reply stored it (ai:done or ai:error), checked again
                    end = SERVER_EVENTS[entry.event].model_validate(entry.data)
                    await sse.send(end.model_dump_json(), event="done" if entry.event == "ai:done" else "error")
        except StreamGone:
            gone = AiErrorEvent(stream_id=stream_uuid, code="stream_gone", message="the stream is no longer buffered")
            await sse.send(gone.model_dump_json(), event="error")
    return sse


@api.route(
    "POST",
    f"{P}/stream",
    summary="Send a message and stream the reply (SSE)",
    body=ChatIn,
    response=ReplyEvent,
    content_type="text/event-stream",
    errors=(404, 409, 429),
)
async def stream(request: web.Request, user: Principal, body: ChatIn) -> web.StreamResponse:
    """Events: `start` {stream_id, session_id, reply_to, message}, `chunk` {stream_id, index, text} with
    the SSE `id` set to the chunk index, then `done` {stream_id, message, usage} or `error`
    {stream_id, code, message}. Reconnect with `GET /api/v1/ai/stream/{stream_id}` and `Last-Event-ID`."""
    reply = await _send_and_find_reply(request, user, body)
    start = AiStartEvent(
        stream_id=reply.id,
        session_id=reply.session_id,
        reply_to=reply.reply_to,
        message_id=reply.id,
        variant=reply.variant,
        message=MessageOut.model_validate(reply),
    )
    return await _stream_sse(request, request.app[REPLY_SERVICE], str(reply.id), 0, start)


@api.route(
    "GET",
    f"{P}/stream/{{stream_id}}",
    summary="Resume a reply stream (SSE)",
    query=ResumeQuery,
    response=ReplyEvent,
    content_type="text/event-stream",
    errors=(404,),
    header_params={"Last-Event-ID": (LastEventId, "The last chunk index received (`from_index` wins over it)")},
)
async def resume_stream(request: web.Request, user: Principal, query: ResumeQuery) -> web.StreamResponse:
    """Continues after the `Last-Event-ID` header (the last chunk index received) or from `from_index`."""
    stream_id = str(path_uuid(request, "stream_id"))
    replies = request.app[REPLY_SERVICE]
    await replies.owned_stream(user, stream_id)
    last_event = request.headers.get("Last-Event-ID")
    after = None if last_event is None else whole_number(last_event, field="Last-Event-ID", maximum=INT64_MAX - 1)
    if query.from_index is not None:
        from_index = query.from_index
    else:
        from_index = 0 if after is None else after + 1
    return await _stream_sse(request, replies, stream_id, from_index, None)


@api.route(
    "POST", f"{P}/sentiment", summary="Sentiment of a text", body=TextIn, response=SentimentOut, errors=(502, 504)
)
async def sentiment(request: web.Request, user: Principal, body: TextIn) -> dict[str, Any]:
    return {"label": await request.app[AI_TOOLS].sentiment(body.text)}


@api.route(
    "POST",
    f"{P}/enhance-prompt",
    summary="Rewrite a persona description",
    body=TextIn,
    response=EnhanceOut,
    errors=(502, 504),
)
async def enhance_prompt(request: web.Request, user: Principal, body: TextIn) -> dict[str, Any]:
    return {"text": await request.app[AI_TOOLS].enhance_prompt(body.text)}
