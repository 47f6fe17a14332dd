"""Socket events of AI replies: `ai:stop` (from any node) and `ai:resume` (replay what was missed from
the stream buffer, then follow it live, each chunk once and in order)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import socketio
import structlog
from pydantic import Field

from core.entities import Principal
from core.tasks import TaskSet
from realtime.acks import EventRegistry, Payload
from realtime.guard import SocketUsers
from realtime.server import ResumeAwareManager
from services.events import chat_room
from services.replies import ReplyService
from services.stream_buffer import StreamGone

log = structlog.get_logger("parlor.socket")
LIVE_GRACE_SECONDS = 30.0


class StopIn(Payload):
    stream_id: UUID


class ResumeIn(Payload):
    stream_id: UUID
    from_index: int = Field(default=0, ge=0, le=2**63 - 1)


def register(sio: socketio.AsyncServer, events: EventRegistry, *, replies: ReplyService, users: SocketUsers) -> None:
    manager: ResumeAwareManager = sio.manager
    replays = TaskSet()

    @events.on("ai:stop", StopIn)
    async def stop(sid: str, user: Principal, payload: StopIn) -> dict[str, Any]:
        await replies.stop(user, str(payload.stream_id))
        return {"stream_id": str(payload.stream_id)}

    async def replay(sid: str, stream_id: str, from_index: int) -> None:
        try:
            async for entry in replies.buffer.follow(stream_id, from_index):
                if entry.event is None:
                    await sio.emit(
                        "ai:chunk", {"stream_id": stream_id, "index": entry.index, "text": entry.text}, to=sid
                    )
                else:
                    await sio.emit(entry.event, entry.data, to=sid)
        except StreamGone:
            await sio.emit(
                "ai:error",
                {
                    "stream_id": stream_id,
                    "code": "stream_gone",
                    "message": "the stream ended long ago; read the reply with sync",
                },
                to=sid,
            )
        except Exception:
            log.exception("replay failed", stream_id=stream_id)
        finally:
            # The live copy of the end event may still be on its way through Redis: keep this socket
            # skipped for the stream a while longer (the stream emits nothing after its end anyway).
            asyncio.get_running_loop().call_later(LIVE_GRACE_SECONDS, forget, sid, stream_id)

    def forget(sid: str, stream_id: str) -> None:
        waiting = manager.resuming.get(stream_id)
        if waiting is not None:
            waiting.discard(sid)
            if not waiting:
                manager.resuming.pop(stream_id, None)

    @events.on("ai:resume", ResumeIn)
    async def resume(sid: str, user: Principal, payload: ResumeIn) -> dict[str, Any]:
        stream_id = str(payload.stream_id)
        info = await replies.live_stream(user, stream_id)  # stream_gone once it has ended
        # Order matters: stop live delivery to this socket before it can join the room, then replay.
        manager.resuming[stream_id].add(sid)
        await sio.enter_room(sid, chat_room(info.session_id))
        (await users.joined(sid)).add(info.session_id)
        replays.spawn(replay(sid, stream_id, payload.from_index))
        return {"stream_id": stream_id, "session_id": info.session_id, "from_index": payload.from_index}
