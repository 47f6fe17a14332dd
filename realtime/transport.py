"""Parlor's websocket transport under python-socketio: what engine.io does per packet, done directly.

Measured on the bench (bench/README.md), python-socketio's layering, not Python, sets the floor: for
each inbound event engine.io starts a reader task under `wait_for`, then a task for the message, then
socket.io a task for the event; each outbound packet goes through a queue to a writer task per socket.
A bare Socket.IO relay on aiohttp without those layers acks about 3x as many messages per second.

So, for a socket on the websocket transport (connected directly, or upgraded from polling):
- the read loop awaits aiohttp's `receive()` (no task per packet, and no timeout: a socket closed on
  the server side, by a ping timeout for one, closes its websocket); a JSON event to the
  default namespace (`42[...]`) is parsed once and its handler runs in one task, which writes the ack
  itself; every other packet (connect, disconnect, pong, binary, other namespaces, anything odd) takes
  the library's own path, unchanged;
- sends write the websocket frame synchronously (no queue, no writer task), every frame of one turn
  of the event loop in one write per socket. Packets queued before the socket went direct are written
  first, in order. permessage-deflate is declined (frames are small; see `_accept`), and writes do not
  wait for the client to drain; a client that falls MAX_BUFFERED_BYTES behind is dropped
  (the library's queue had no bound);
- polling sockets keep the library's queue, with `_poll` below in place of its `wait_for`; a POST
  body that cannot be decoded is one rate-limited warning (realtime/bad_packets.py), not a traceback.

This replaces library internals (INTERNALS lists every one), so it is tied to the versions in
TESTED_WITH, pinned in requirements.txt. Nothing changes at import: `install(sio)`, called by
create_sio(), applies it when the installed versions are those and otherwise leaves the library's own
transport in place, with a warning (the fan-out then takes the library's queue too, as `direct` stays
None). tests/realtime/test_transport.py and test_fan_out.py check the fast path at the wire level and
must pass before a pin moves; test_transport_fallback.py checks the library's path."""

from __future__ import annotations

import asyncio
import struct
from importlib import metadata
from typing import Any

import socketio
import structlog
from aiohttp import WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from engineio.exceptions import EngineIOError, QueueEmpty, SocketIsClosedError, UnknownPacketError

from core.tasks import TaskSet
from realtime.bad_packets import refused_packet
from realtime.socket_json import dumps_bytes

log = structlog.get_logger(__name__)

# The versions this module was written against and tested with; on any other, install() falls back.
TESTED_WITH = {"python-socketio": "5.18.1", "python-engineio": "4.15.1", "aiohttp": "3.14.5"}
# Every library member used here beyond the documented API (and `socket.last_ping`, `socket.queue`,
# `eio.sockets` in realtime/server.py's fan-out): what to re-read before a pin moves.
INTERNALS = (
    # replaced by install()
    "engineio.async_socket.AsyncSocket.send / poll / close / handle_post_request / _websocket_handler",
    "engineio.async_drivers.aiohttp.WebSocket.__call__",
    # read or set
    "engineio.async_socket.AsyncSocket: check_ping_timeout, receive, queue, closed, connected, upgraded, "
    "upgrading, sid, server",
    "engineio.async_server.AsyncServer: ping_interval, ping_timeout, max_http_buffer_size, reason",
    "engineio.async_drivers.aiohttp.WebSocket: _sock, wait, send, handler, server, environ",
    "socketio.AsyncServer: eio, manager, async_handlers, packet_class.json, not_handled, _binary_packet, "
    "_trigger_event, _send_packet",
    "socketio.AsyncManager: sid_from_eio_sid, is_connected",
    "aiohttp.web.WebSocketResponse._writer; aiohttp._websocket.writer.WebSocketWriter: _closing, transport",
)

# Bytes written to a websocket that its client has not read yet, past which it is dropped. Far above
# any one answer (a `sync` page of 500 long messages is a few megabytes), far below what a server can
# hold for thousands of sockets.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
_DIGITS = frozenset("0123456789")
_MAX_ACK_ID_DIGITS = 15
_tasks = TaskSet()  # running event and close tasks
_keep = _tasks.keep


def build_frame(payload: bytes, binary: bool = False) -> bytes:
    """A whole unmasked websocket message (server to client), built once for any number of sockets."""
    first = 0x82 if binary else 0x81  # FIN + opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


class _Output:
    """Frames written in one turn of the event loop leave in one write per socket, at the end of the
    turn: the ack and the `message:new` of a send go out together, and a batch of 256 commits reaches
    each socket of a room in one write, not 256."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[web.WebSocketResponse, list[bytes]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def write(self, sock: web.WebSocketResponse, frame: bytes) -> None:
        entry = self.pending.get(id(sock))
        if entry is not None:
            entry[1].append(frame)
            return
        self.pending[id(sock)] = (sock, [frame])
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop = loop
            loop.call_soon(self.flush_all)

    def flush_all(self) -> None:
        self.loop = None
        pending, self.pending = self.pending, {}
        for sock, frames in pending.values():
            _write_now(sock, frames)

    def flush(self, sock: web.WebSocketResponse) -> None:
        entry = self.pending.pop(id(sock), None)
        if entry is not None:
            _write_now(sock, entry[1])


def _write_now(sock: web.WebSocketResponse, frames: list[bytes]) -> None:
    writer = sock._writer
    if writer is None or writer._closing or writer.transport.is_closing():
        return  # closing: what is left is not delivered, as with the library's writer
    transport = writer.transport
    transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
    if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
        # The client reads far slower than it is sent to (or not at all): drop the connection rather
        # than hold ever more of its frames. Its read loop ends and the disconnect runs as usual.
        log.warning("websocket client not reading; connection dropped", buffered=transport.get_write_buffer_size())
        transport.abort()


output = _Output()


def write_frame(sock: web.WebSocketResponse, frame: bytes) -> None:
    """Send a frame from build_frame() on this websocket (at the end of this turn of the loop)."""
    output.write(sock, frame)


def write_packet(sock: web.WebSocketResponse, encoded: str | bytes) -> None:
    """An encoded engine.io packet: text as a text message, bytes (binary attachments) as binary."""
    if isinstance(encoded, str):
        output.write(sock, build_frame(encoded.encode()))
    else:
        output.write(sock, build_frame(encoded, binary=True))


async def _send(self: AsyncSocket, pkt: eio_packet.Packet) -> None:
    """AsyncSocket.send: the library's checks, then a direct write for a websocket socket."""
    if not await self.check_ping_timeout():
        return
    sock: web.WebSocketResponse | None = self.direct
    if sock is None:
        await self.queue.put(pkt)
    else:
        write_packet(sock, pkt.encode())


_library_close = AsyncSocket.close


async def _close(self: AsyncSocket, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
    """AsyncSocket.close, then, for a websocket closed from this side (a server disconnect, a ping
    timeout), the websocket itself: what was written goes first, then the close frame. The read loop
    has no timeout of its own; this is how it ends for a client that stopped answering."""
    await _library_close(self, wait, abort, reason)
    sock: web.WebSocketResponse | None = self.direct
    if sock is not None and self.closed:
        self.direct = None
        output.flush(sock)
        _keep(asyncio.ensure_future(sock.close()))


async def _poll(self: AsyncSocket) -> list[eio_packet.Packet]:
    """AsyncSocket.poll (polling sockets, and a websocket before it goes direct) without `wait_for`,
    which wraps `queue.get()` in a new task on each wake. The library's behaviour otherwise: the same
    timeout, QueueEmpty on timeout or cancel, [] once closed."""
    queue = self.queue
    if queue.empty():
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await queue.get()
        except (TimeoutError, asyncio.CancelledError):
            raise QueueEmpty() from None
    else:
        first = queue.get_nowait()
    queue.task_done()
    if first is None:
        return []
    packets = [first]
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:
            queue.put_nowait(None)  # the close marker stays for the next poll
            break
        packets.append(pkt)
    return packets


_library_post = AsyncSocket.handle_post_request


async def _handle_post_request(self: AsyncSocket, environ: dict[str, Any]) -> None:
    """AsyncSocket.handle_post_request (a long-polling POST); a body that cannot be decoded (not UTF-8,
    broken base64, a broken payload) is refused with one rate-limited warning, where the library wrote
    an ERROR traceback for each; the socket stays, as with the library."""
    try:
        await _library_post(self, environ)
    except EngineIOError:
        raise  # the library's own refusals (too long): it answers 400 and closes the socket
    except Exception as err:  # noqa: BLE001 - whatever the payload broke
        refused_packet("engine.io", err)


async def _upgrade_handshake(self: AsyncSocket, ws: Any) -> bool:
    """The library's polling → websocket upgrade (probe ping/pong, then UPGRADE), unchanged."""
    self.upgrading = True  # hold packet sends during the upgrade
    try:
        pkt = await _wait(self, ws)
    except OSError:
        return False
    decoded = eio_packet.Packet(encoded_packet=pkt)
    if decoded.packet_type != eio_packet.PING or decoded.data != "probe":
        self.upgrading = False
        return False
    await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end the pending poll
    try:
        pkt = await _wait(self, ws)
    except OSError:
        self.upgrading = False
        return False
    if eio_packet.Packet(encoded_packet=pkt).packet_type != eio_packet.UPGRADE:
        self.upgraded = False
        self.upgrading = False
        return False
    self.upgraded = True
    self.upgrading = False
    return True


async def _wait(self: AsyncSocket, ws: Any) -> Any:
    data = await ws.wait()
    if data and len(data) > self.server.max_http_buffer_size:
        raise ValueError("packet is too large")
    return data


async def _websocket_handler(self: AsyncSocket, ws: Any) -> None:  # noqa: C901 - mirrors engine.io's own handler
    """AsyncSocket._websocket_handler: one read loop, direct writes, fast JSON events (see above)."""
    if self.connected:
        if not await _upgrade_handshake(self, ws):
            return
    else:
        self.connected = True
        self.upgraded = True
    sock: web.WebSocketResponse = ws._sock
    # What was queued so far (the OPEN packet, a CONNECT answer, emits during the upgrade) goes first.
    # No await between the last check and `direct`: nothing can be queued behind it.
    queue = self.queue
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is not None:
            write_packet(sock, pkt.encode())
    self.direct = sock

    server = self.server
    fast = getattr(server, "fast_message", None)
    limit = server.max_http_buffer_size
    try:
        while True:
            try:
                msg = await sock.receive()  # no timeout: _close ends a socket whose pings stopped
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - reset, server shutdown: the socket ends
                break
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                data = msg.data
            else:  # close, closing, closed, error
                break
            if len(data) > limit:
                break
            if fast is not None and type(data) is str and data.startswith("42") and fast(self, data):
                continue
            try:
                await self.receive(eio_packet.Packet(encoded_packet=data))
            except UnknownPacketError:
                pass
            except SocketIsClosedError:
                break
            except Exception as err:  # noqa: BLE001 - a malformed packet: refused, the socket stays
                refused_packet("engine.io", err)
    finally:
        self.direct = None
    # The disconnect handlers run in their own task: a server that cancels a request's task when its
    # client goes away (aiohttp's handler_cancellation) must not cut them short halfway.
    closing = _keep(asyncio.ensure_future(self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)))
    output.flush(sock)
    await sock.close()
    await asyncio.shield(closing)


def _install_fast_events(sio: socketio.AsyncServer) -> None:  # noqa: C901 - mirrors python-socketio's dispatch
    """Let the read loop hand JSON events to the default namespace straight to `sio`'s handlers."""
    if not sio.async_handlers:
        return  # the fast path runs each event in its own task, as async_handlers does
    loads = sio.packet_class.json.loads
    manager = sio.manager
    binary_pending = sio._binary_packet

    def fast_message(socket: AsyncSocket, text: str) -> bool:
        """Start the event in `text` ("42<id>[name, ...args]"); False leaves it to the library."""
        eio_sid = socket.sid
        if eio_sid in binary_pending:
            return False
        end = len(text)
        i = 2
        while i < end and text[i] in _DIGITS:
            i += 1
        if i - 2 > _MAX_ACK_ID_DIGITS or i == end or text[i] != "[":
            return False
        try:
            args = loads(text[i:])
        except ValueError:
            return False
        if type(args) is not list or not args or type(args[0]) is not str:
            return False
        sid = manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or not manager.is_connected(sid, "/"):
            return False
        ack_id = int(text[2:i]) if i > 2 else None
        _keep(asyncio.ensure_future(run_event(socket, sid, args, ack_id)))
        return True

    client_event = getattr(sio, "client_event", None)

    async def run_event(socket: AsyncSocket, sid: str, args: list[Any], ack_id: int | None) -> None:
        if client_event is not None:  # refuses reserved names, as on the library's path
            result = await client_event(sid, args)
        else:
            result = await sio._trigger_event(args[0], "/", sid, *args[1:])
        if result is sio.not_handled or ack_id is None:
            return
        data = [] if result is None else list(result) if isinstance(result, tuple) else [result]
        try:
            body = dumps_bytes(data)
        except TypeError:  # bytes in the answer: a binary ack, the library's way
            ack = sio.packet_class(socketio.packet.ACK, namespace="/", id=ack_id, data=data)
            await sio._send_packet(socket.sid, ack)
            return
        sock: web.WebSocketResponse | None = socket.direct
        if sock is not None and not socket.closed:
            write_frame(sock, build_frame(b"43" + str(ack_id).encode() + body))
        else:
            await socket.send(eio_packet.Packet(eio_packet.MESSAGE, "3" + str(ack_id) + body.decode()))

    sio.eio.fast_message = fast_message


async def _accept(self: Any, environ: dict[str, Any]) -> web.WebSocketResponse:
    """engine.io's aiohttp websocket driver (`WebSocket.__call__`), with permessage-deflate declined:
    browsers otherwise compress every frame they send, which costs a zlib inflate per inbound event
    and zlib state per socket for frames of a few hundred bytes (Node's socket.io declines it too)."""
    request = environ["aiohttp.request"]
    self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
    await self._sock.prepare(request)
    self.environ = environ
    await self.handler(self)
    return self._sock


# What install() rebinds, and the library's own members, kept so that tests can put them back.
_REBOUND: tuple[tuple[type, str, Any], ...] = (
    (eio_aiohttp.WebSocket, "__call__", _accept),
    (AsyncSocket, "send", _send),
    (AsyncSocket, "poll", _poll),
    (AsyncSocket, "handle_post_request", _handle_post_request),
    (AsyncSocket, "close", _close),
    (AsyncSocket, "_websocket_handler", _websocket_handler),
)
LIBRARY = {(owner, name): owner.__dict__[name] for owner, name, _ in _REBOUND}
_applied = False


def differing_versions() -> dict[str, str]:
    """The libraries whose installed version is not the tested one, with the installed version."""
    differing = {}
    for name, tested in TESTED_WITH.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != tested:
            differing[name] = installed
    return differing


def install(sio: socketio.AsyncServer, *, library: bool = False) -> bool:
    """Run `sio`'s websocket sockets on this transport and return True; or, when `library` is set or
    the installed versions are not TESTED_WITH (one warning names them), leave the library's own
    transport in place and return False. The rebinding is process-wide (class attributes) and done
    once; each further server only gets its fast events."""
    global _applied
    if not hasattr(AsyncSocket, "direct"):
        AsyncSocket.direct = None  # the aiohttp websocket once a socket writes directly; the fan-out reads it
    differing = {} if library else differing_versions()
    if library or differing:
        if _applied:  # sockets of this process already run the patched methods: no half-and-half
            raise RuntimeError("the websocket transport is already installed in this process")
        if differing:
            log.warning(
                "library versions differ from those the websocket transport was tested with; "
                "using the library's own transport",
                installed=differing,
                tested={name: TESTED_WITH[name] for name in differing},
            )
        else:
            log.info("using the library's own websocket transport")
        return False
    if not _applied:
        for owner, name, replacement in _REBOUND:
            setattr(owner, name, replacement)
        _applied = True
    _install_fast_events(sio)
    return True
