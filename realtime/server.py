"""The Socket.IO server: in-process fan-out by default, AsyncRedisManager when REDIS_URL is set.

Both managers share one addition: a socket that is replaying an AI stream with `ai:resume` is skipped
by that stream's live events on its node, so it receives every chunk exactly once, in order, from the
replay (which follows the stream buffer to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import socketio
import structlog
from engineio import packet as eio_packet
from engineio.exceptions import SocketIsClosedError
from socketio import packet as sio_packet

from realtime import socket_json
from realtime.acks import failed
from realtime.bad_packets import refused_packet
from realtime.socket_json import dumps_bytes
from realtime.transport import build_frame, install, write_frame

log = structlog.get_logger(__name__)
STREAM_EVENTS = frozenset({"ai:chunk", "ai:done", "ai:error"})
# An event packet's ack id ("2" [binary count "-"] [namespace ","] id "["), read from a packet whose
# payload could not be decoded, so the client gets an answer instead of waiting for its timeout.
_EVENT_ACK_ID = re.compile(r"^2(?:\d+-)?(/[^,]{0,200},)?(\d{1,15})\[")
# What a malformed Socket.IO packet raises while it is decoded (JSON errors are ValueErrors).
DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError)


class ParlorServer(socketio.AsyncServer):
    """Two rules on every transport (websocket, long-polling, binary events) at the one place the
    library decodes and dispatches client packets:
    - a client event named like one of the server's own handlers ("connect", "disconnect"), or with no
      name, is answered `unknown_event` and never reaches them;
    - a packet that cannot be decoded (bad JSON, JSON nested deeper than the parser takes, a broken
      header) is answered `invalid` when it carries an ack id, logged as one rate-limited warning, and
      the connection stays open."""

    def _allowed(self, data: list[Any]) -> bool:
        return bool(data) and isinstance(data[0], str) and data[0] not in self.reserved_events

    async def _refused_event(self, sid: str, data: list[Any]) -> Any:
        """What the catch-all ("*") handler answers, as for any unknown event."""
        handler = self.handlers.get("/", {}).get("*")
        if handler is None:
            return self.not_handled
        return await handler(data[0] if data else None, sid, *data[1:])

    async def client_event(self, sid: str, data: list[Any]) -> Any:
        """Run the handler of the client event `data` = [name, *args] (the fast path calls this too)."""
        if not self._allowed(data):
            return await self._refused_event(sid, data)
        return await self._trigger_event(data[0], "/", sid, *data[1:])

    async def _handle_event_internal(  # type: ignore[override]
        self, server: Any, sid: str, eio_sid: str, data: list[Any], namespace: str, id: int | None
    ) -> None:
        if namespace != "/" or self._allowed(data):
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
            return
        result = await self._refused_event(sid, data)
        if result is not self.not_handled and id is not None:
            ack = self.packet_class(sio_packet.ACK, namespace=namespace, data=[result], id=id)
            await server._send_packet(eio_sid, ack)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except DECODE_ERRORS as err:
            self._binary_packet.pop(eio_sid, None)
            refused_packet("socket.io", err)
            match = _EVENT_ACK_ID.match(data) if isinstance(data, str) else None
            if match is not None:
                namespace = (match.group(1) or "/,")[:-1]
                answer = failed("invalid", "the packet could not be read (malformed or too deeply nested JSON)")
                await self._send_packet(
                    eio_sid,
                    self.packet_class(sio_packet.ACK, namespace=namespace, data=[answer], id=int(match.group(2))),
                )


class ResumeAwareManager(socketio.AsyncManager):
    """Local delivery step of every emit (for the Redis manager it runs on each node after pub/sub)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resuming: defaultdict[str, set[str]] = defaultdict(set)

    async def emit(  # type: ignore[override]
        self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None, **kwargs: Any
    ) -> Any:
        if event in STREAM_EVENTS and self.resuming and isinstance(data, dict):
            replaying = self.resuming.get(str(data.get("stream_id")))
            # A replay addressed to the socket itself (room == its sid) must go through. `room` may also
            # be a list of rooms (a reply's end goes to the user's room and the chat's): never a sid.
            if replaying and not (isinstance(room, str) and room in replaying):
                skip = set(replaying)
                if skip_sid:
                    skip |= set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
                skip_sid = list(skip)
        if kwargs.get("callback") is not None:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
        return await self._fan_out(event, data, namespace, kwargs.get("to") or room, skip_sid)

    async def _fan_out(self, event: str, data: Any, namespace: str, room: Any, skip_sid: Any) -> None:
        """AsyncManager.emit without a task per recipient. The library encodes the packet once, then
        creates a task per socket that awaits its way down to `socket.queue.put`; for a room of 1,000
        that is most of the cost of the emit. Here the one encoded frame is written straight to each
        websocket (realtime/transport.py), or put on a polling socket's queue (unbounded, so put_nowait
        never fails), in the same order. A socket whose pings stopped takes the library's send, which
        closes it."""
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        try:
            body = dumps_bytes([event, *args])
        except TypeError:  # binary attachments: several packets, keep the library's path
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid)
            return
        message = (b"42" if namespace == "/" else b"42" + namespace.encode() + b",") + body
        frame = build_frame(message)
        eio_pkt: eio_packet.Packet | None = None  # for polling or stale sockets only, made once if needed
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        sockets = self.server.eio.sockets
        deadline = time.time() - self.server.eio.ping_timeout
        stale = []
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            if socket.last_ping and socket.last_ping < deadline:
                stale.append(socket)
                continue
            if socket.direct is not None:
                write_frame(socket.direct, frame)
            else:
                eio_pkt = eio_pkt or eio_packet.Packet(eio_packet.MESSAGE, message[1:].decode())
                socket.queue.put_nowait(eio_pkt)
        for socket in stale:
            eio_pkt = eio_pkt or eio_packet.Packet(eio_packet.MESSAGE, message[1:].decode())
            with contextlib.suppress(SocketIsClosedError):
                await socket.send(eio_pkt)


class ResumeAwareRedisManager(socketio.AsyncRedisManager, ResumeAwareManager):
    """MRO: AsyncRedisManager → AsyncPubSubManager → ResumeAwareManager → AsyncManager, so publishing
    is unchanged and the filter applies where each node delivers to its own sockets.

    Publishing is batched: every emit waiting at the same moment goes out in one pipelined round trip
    on one connection, in order. (The library publishes each emit on its own connection; a burst of
    emits opened a new Redis connection for each, and redis-py reads package metadata for every new
    connection: most of a two-process server's CPU went there.)

    Redis outages: the library delivers every emit (and disconnect, close_room) to this node's own
    sockets before publishing it, so an emit that cannot be published has already reached them; it is
    logged, never delivered again (each event reaches each socket once). The listener retries every few
    seconds at most (the library backs off to a minute), so cross-node delivery resumes soon after
    Redis returns."""

    LISTEN_RETRY_MAX_SECONDS = 2.0
    MAX_PUBLISH_BATCH = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outbox: list[tuple[Any, asyncio.Future[None]]] = []
        self._publisher: asyncio.Task[None] | None = None

    async def _publish(self, data: Any) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((data, future))
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_outbox())
        await future
        return None

    async def _publish_outbox(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox[: self.MAX_PUBLISH_BATCH], self._outbox[self.MAX_PUBLISH_BATCH :]
                try:
                    await self._publish_batch([data for data, _ in batch])
                finally:  # whatever happened, nobody waits forever
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._publisher = None

    async def _publish_batch(self, batch: list[Any]) -> None:
        try:
            if not self.connected:  # type: ignore[has-type]
                self._redis_connect()
            async with self.redis.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.publish(self.channel, self.json.dumps(data))
                await pipe.execute()
        except Exception as err:  # noqa: BLE001 - any Redis failure: this node's sockets already have them
            self.connected = False
            log.warning("redis publish failed; delivered on this node only", error=str(err), events=len(batch))

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        retry = 0.2
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = True
                    retry = 0.2
                    log.info("socket.io redis listener subscribed")
                async for message in self.pubsub.listen():
                    yield message
            except Exception as err:  # noqa: BLE001 - supervise: whatever broke, resubscribe
                log.warning("socket.io redis listener lost; retrying", error=str(err), retry_in=retry)
                subscribed = False
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.LISTEN_RETRY_MAX_SECONDS)


def create_sio(
    *, redis_url: str | None, redis_prefix: str, cors_origins: str, library_transport: bool = False
) -> socketio.AsyncServer:
    """The Socket.IO server, on Parlor's websocket transport unless `library_transport` is set or the
    installed library versions are not the tested ones (realtime/transport.py)."""
    manager: ResumeAwareManager
    if redis_url:
        manager = ResumeAwareRedisManager(
            redis_url,
            channel=f"{redis_prefix}:socketio",
            json=socket_json,
            redis_options={
                "socket_keepalive": True,
                "health_check_interval": 30,
                "socket_connect_timeout": 2,
            },
        )
    else:
        manager = ResumeAwareManager()
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()]
    sio = ParlorServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins="*" if origins == ["*"] else origins,
        # Chat payloads are small: 2 MB lets an oversized message reach validation (an error ack)
        # instead of killing the connection, while still bounding what a client can send.
        max_http_buffer_size=2_000_000,
        # Per-message deflate costs CPU on every token chunk for little gain on tiny frames.
        compression_threshold=4096,
        logger=False,
        engineio_logger=False,
        # Each event in its own task: a slow handler never holds up the socket's other events, and
        # EventRegistry relies on the per-task context for its log bindings.
        async_handlers=True,
        json=socket_json,
    )
    install(sio, library=library_transport)
    return sio
