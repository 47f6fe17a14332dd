"""Reworking the newest reply: a regeneration (a new variant, streamed like any reply; every variant kept) or
a continuation (more text streamed onto the reply). Each is claimed in one transaction under the session's
row lock: the checks, the row turned back to streaming, and the charge of one AI message (keyed by the
reply's new rev, its `turn`, and given back if the work fails)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core.entities import Message, Principal
from core.errors import Busy, Conflict, NotFound, ValidationFailed
from core.timefmt import iso
from services.quota import Charge, QuotaService
from storage.chat import ChatStore

# What the model is told when it goes on with its own last message (chat APIs want the user last).
CONTINUE_NUDGE = "(Continue your last message from exactly where it stopped. Do not repeat any of it.)"


@dataclass(frozen=True)
class Rework:
    """How a reworked reply differs from a new one: its charge's turn, the text it goes on from (continue),
    and what to put back if it fails."""

    turn: int
    continuing: bool
    prefix: str  # the text so far (continue); "" for a regeneration
    previous_variant: int
    previous_status: str
    previous_usage: dict[str, Any] | None


@dataclass(frozen=True)
class Claimed:
    reply: Message
    persona_id: uuid.UUID
    pending: list[Message]  # the user messages the reply answers
    charge: Charge
    rework: Rework


def _stored_variant(variant: dict[str, Any]) -> dict[str, Any]:
    created = variant["created_at"]
    return {**variant, "created_at": iso(created) if isinstance(created, datetime) else created}


async def claim(
    conn: asyncpg.Connection,
    chat: ChatStore,
    quota: QuotaService,
    user: Principal,
    message_id: uuid.UUID,
    *,
    continuing: bool,
    lease_seconds: float,
    session_id: uuid.UUID | None = None,
) -> Claimed:
    """Inside a transaction. 404 for another user's message; 409 `busy` while a reply streams in the chat;
    422 for a message that is not the chat's newest reply (or, to continue, one with no text); 402 when the
    quota and credits are spent. On success the row streams again and this process runs it."""
    message = await chat.owned_message(conn, message_id, user.id)  # locks the session's row
    if message is None or (session_id is not None and message.session_id != session_id):
        raise NotFound("message not found")
    if message.status == "streaming" or await chat.streaming_reply(conn, message.session_id) is not None:
        raise Busy("a reply is being written in this chat: wait for it, or stop it")
    newest = await chat.newest_message(conn, message.session_id)
    if message.role != "assistant" or message.kind != "message" or newest is None or newest.id != message.id:
        raise ValidationFailed(
            "message_id: only the chat's newest reply",
            details=[{"field": "message_id", "message": "not the chat's newest reply"}],
        )
    if continuing and (message.status not in ("complete", "stopped") or not message.content):
        raise ValidationFailed(
            "message_id: a reply with text to go on from",
            details=[{"field": "message_id", "message": "nothing to continue"}],
        )
    session = await chat.owned_session(conn, session_id=message.session_id, user_id=user.id)
    assert session is not None  # locked above, and the user's
    if session.persona_id is None:
        raise Conflict("this chat's persona was deleted: nobody can reply", code="no_persona")
    pending = await chat.answered_by(conn, message)
    if continuing:
        reply = await chat.start_continue(conn, message.id)
    else:
        variants = [_stored_variant(v) for v in message.all_variants]
        now = iso(datetime.now(UTC))
        variants.append(
            {"index": len(variants), "content": "", "status": "streaming", "usage": None, "created_at": now}
        )
        reply = await chat.start_variant(conn, message.id, variants, len(variants) - 1)
    assert reply is not None  # not streaming: checked under the lock
    charge = await quota.charge_in(conn, user.id, reply.id, turn=reply.rev)
    await chat.claim_lease(conn, reply.id, seconds=lease_seconds)
    rework = Rework(
        turn=reply.rev,
        continuing=continuing,
        prefix=message.content if continuing else "",
        previous_variant=message.variant,
        previous_status=message.status,
        previous_usage=message.usage,
    )
    return Claimed(reply, session.persona_id, pending, charge, rework)


def continuation_history(history: list[Message], reply: Message, rework: Rework) -> list[Message]:
    """The conversation a continuation is asked from: the reply's text so far as the last assistant turn,
    then the nudge as a user turn."""
    so_far = replace(reply, content=rework.prefix, status="complete")
    nudge = replace(
        reply, id=uuid.uuid4(), seq=reply.seq + 1, role="user", content=CONTINUE_NUDGE, kind="message", variants=[]
    )
    return [*history, so_far, nudge]
