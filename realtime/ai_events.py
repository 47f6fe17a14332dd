"""Socket events of AI replies: `ai:stop` (from any node) and `ai:resume` (replay what was missed from
the stream buffer, then follow it live, each chunk once and in order)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import socketio
import structlog

from core.entities import Principal
from core.errors import StreamGone
from core.events import SERVER_EVENTS, AiChunkEvent, AiErrorEvent, ResumeAck, ResumeIn, StopAck, StopIn, chat_room
from core.tasks import TaskSet
from realtime.acks import EventRegistry
from realtime.emitter import SocketEvents
from realtime.guard import SocketUsers
from realtime.server import ResumeAwareManager
from services.replies import ReplyService

log = structlog.get_logger("parlor.socket")
LIVE_GRACE_SECONDS = 30.0


def register(sio: socketio.AsyncServer, events: EventRegistry, *, replies: ReplyService, users: SocketUsers) -> None:
    manager: ResumeAwareManager = sio.manager
    emitter = SocketEvents(sio)
    replays = TaskSet()

    @events.on("ai:stop", StopIn)
    async def stop(sid: str, user: Principal, payload: StopIn) -> StopAck:
        await replies.stop(user, str(payload.stream_id))
        return StopAck(stream_id=payload.stream_id)

    async def replay(sid: str, stream_id: str, from_index: int) -> None:
        stream_uuid = UUID(stream_id)
        try:
            async for entry in replies.buffer.follow(stream_id, from_index):
                if entry.event is None:
                    chunk = AiChunkEvent(stream_id=stream_uuid, index=entry.index, text=entry.text)
                    await emitter.to_socket(sid, chunk)
                else:  # the end event as the reply stored it (ai:done or ai:error), checked again
                    await emitter.to_socket(sid, SERVER_EVENTS[entry.event].model_validate(entry.data))
        except StreamGone:
            gone = AiErrorEvent(
                stream_id=stream_uuid,
                code="stream_gone",
                message="the stream ended long ago; read the reply with sync",
            )
            await emitter.to_socket(sid, gone)
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
    async def resume(sid: str, user: Principal, payload: ResumeIn) -> ResumeAck:
        stream_id = str(payload.stream_id)
        info = await replies.live_stream(user, stream_id)  # stream_gone once it has ended
        # Order matters: stop live delivery to this socket before it can join the room, then replay.
        manager.resuming[stream_id].add(sid)
        await sio.enter_room(sid, chat_room(info.session_id))
        (await users.joined(sid)).add(info.session_id)
        replays.spawn(replay(sid, stream_id, payload.from_index))
        return ResumeAck(stream_id=payload.stream_id, session_id=UUID(info.session_id), from_index=payload.from_index)
