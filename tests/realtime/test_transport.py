"""Parlor's websocket transport under python-socketio (realtime/transport.py, issue 6), at the wire
level: JSON events to the default namespace are answered on the fast path, every other packet the
library's way, frames leave in order, and a websocket ends when the server closes the socket or the
client stops answering pings (the read loop has no timeout of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from realtime import transport
from realtime.server import create_sio
from server.config import Settings
from tests.helpers import server_url, wait_until

WS_PATH = "/socket.io/?EIO=4&transport=websocket"


@pytest.fixture
async def bare(aiohttp_client: Any, settings: Settings) -> AsyncIterator[tuple[TestClient, socketio.AsyncServer]]:
    """create_sio() as the server configures it, with test events instead of Parlor's."""
    sio = create_sio(redis_url=None, redis_prefix=settings.redis_prefix, cors_origins="*")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if auth != {"token": "ok"}:
            raise socketio.exceptions.ConnectionRefusedError("no")

    @sio.on("echo")
    async def echo(sid: str, *args: Any) -> tuple[Any, ...]:
        return args

    @sio.on("bytes")
    async def raw_bytes(sid: str, data: Any = None) -> bytes:
        return b"\x00\x01\x02"

    @sio.on("burst")
    async def burst(sid: str, count: int) -> str:
        for i in range(count):
            await sio.emit("tick", i, to=sid)
        return "done"

    @sio.on("flood")
    async def flood(sid: str, count: int) -> None:
        for _ in range(count):
            await sio.emit("blob", "x" * 100_000, to=sid)

    @sio.on("kick")
    async def kick(sid: str, data: Any = None) -> None:
        await sio.disconnect(sid)

    @sio.on("*")
    async def unknown(event: str, sid: str, *args: Any) -> dict[str, Any]:
        return {"unknown": event}

    app = web.Application()
    sio.attach(app)
    yield await aiohttp_client(app), sio


async def open_raw(client: TestClient) -> aiohttp.ClientWebSocketResponse:
    """A websocket speaking Engine.IO v4 / Socket.IO v5 by hand, connected to "/"."""
    ws = await client.ws_connect(WS_PATH)
    opened = await ws.receive_str(timeout=5)
    assert opened.startswith("0{"), opened
    await ws.send_str('40{"token":"ok"}')
    connected = await ws.receive_str(timeout=5)
    assert connected.startswith('40{"sid":'), connected
    return ws


@contextlib.asynccontextmanager
async def library_client(
    client: TestClient, transports: list[str], **handlers: Any
) -> AsyncIterator[socketio.AsyncClient]:
    """python-socketio's own client, connected to "/" over `transports`, with `handlers` registered."""
    sio_client = socketio.AsyncClient(reconnection=False)
    for event, handler in handlers.items():
        sio_client.on(event, handler)
    await sio_client.connect(server_url(client), auth={"token": "ok"}, transports=transports, wait_timeout=5)
    try:
        yield sio_client
    finally:
        await sio_client.disconnect()


async def next_text(ws: aiohttp.ClientWebSocketResponse, *, skip_pings: bool = True, wait: float = 5) -> str:
    while True:
        text = await ws.receive_str(timeout=wait)
        if skip_pings and text == "2":
            await ws.send_str("3")
            continue
        return text


async def test_events_are_answered_with_acks_carrying_every_value(bare: Any) -> None:
    client, _ = bare
    ws = await open_raw(client)
    await ws.send_str('42["echo",1]')  # no ack id: no answer
    await ws.send_str('4217["echo",{"x":1,"é":"ü"},[2,null],"three"]')
    ack = await next_text(ws)
    assert ack.startswith("4317")
    assert json.loads(ack[4:]) == [{"x": 1, "é": "ü"}, [2, None], "three"]
    await ws.send_str('42123456789012["echo",true]')
    assert await next_text(ws) == "43123456789012[true]"
    # NaN is not JSON, but the standard library (taking over from orjson) reads it, as before.
    await ws.send_str('425["echo",NaN]')
    assert await next_text(ws) == "435[null]"
    await ws.close()


async def test_unusual_packets_take_the_library_path_and_the_socket_lives_on(bare: Any) -> None:
    client, _ = bare
    ws = await open_raw(client)
    # A client may not emit "connect": the catch-all answers instead of the connect handler.
    await ws.send_str('421["connect",{}]')
    assert await next_text(ws) == '431[{"unknown":"connect"}]'
    await ws.send_str("42[")  # malformed JSON
    await ws.send_str('42{"not":"a list"}')  # not an event array
    await ws.send_str('42/other,3["echo",1]')  # a namespace this socket did not join
    await ws.send_str('422["echo","still here"]')
    assert await next_text(ws) == '432["still here"]'
    await ws.close()


async def test_an_answer_holding_bytes_goes_as_a_binary_ack(bare: Any) -> None:
    client, _ = bare
    async with library_client(client, ["websocket"]) as sio_client:
        assert await sio_client.call("bytes", timeout=5) == b"\x00\x01\x02"
        assert await sio_client.call("echo", "after", timeout=5) == "after"


async def test_emits_of_one_turn_arrive_in_order_before_the_ack(bare: Any) -> None:
    client, _ = bare
    ws = await open_raw(client)
    await ws.send_str('429["burst",200]')
    for i in range(200):
        assert await next_text(ws) == f'42["tick",{i}]'
    assert await next_text(ws) == '439["done"]'
    await ws.close()


async def test_a_polling_socket_upgrades_and_then_writes_directly(bare: Any) -> None:
    client, sio = bare
    ticks: list[int] = []
    async with library_client(client, ["polling", "websocket"], tick=ticks.append) as sio_client:
        await wait_until(lambda: sio_client.transport() == "websocket")
        assert await sio_client.call("burst", 20, timeout=5) == "done"
        await wait_until(lambda: len(ticks) == 20)
        assert ticks == list(range(20))
        eio_sid = sio.manager.eio_sid_from_sid(sio_client.get_sid(), "/")
        assert sio.eio.sockets[eio_sid].direct is not None


async def test_a_server_disconnect_ends_the_namespace_and_later_events_are_ignored(bare: Any) -> None:
    client, _ = bare
    ws = await open_raw(client)
    await ws.send_str('42["kick"]')
    assert await next_text(ws) == "41"
    await ws.send_str('427["echo",1]')  # no longer connected to "/": the library drops it
    with pytest.raises(TimeoutError):
        await next_text(ws, wait=1)
    await ws.close()


async def test_a_client_that_stops_answering_pings_is_closed_and_one_that_answers_stays(bare: Any) -> None:
    client, sio = bare
    sio.eio.ping_interval = 0.2
    sio.eio.ping_timeout = 1.0  # generous: the answering client must not miss it on a busy machine
    silent = await open_raw(client)
    polite = await open_raw(client)

    async def answer_pings() -> None:
        async for msg in polite:
            if msg.type is WSMsgType.TEXT and msg.data == "2":
                await polite.send_str("3")

    answering = asyncio.ensure_future(answer_pings())
    try:
        # The silent one never sends "3": the server closes its websocket within a few ping cycles.
        async with asyncio.timeout(20):
            while (await silent.receive()).type is WSMsgType.TEXT:
                pass
        await wait_until(lambda: len(sio.eio.sockets) == 1)
        await asyncio.sleep(2.5)  # more than two ping timeouts later, the answering one is still there
        assert len(sio.eio.sockets) == 1 and not polite.closed
    finally:
        answering.cancel()
        await polite.close()


async def test_a_client_that_does_not_read_is_dropped_once_far_behind(
    bare: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sio = bare
    monkeypatch.setattr(transport, "MAX_BUFFERED_BYTES", 1_000_000)
    ws = await open_raw(client)
    await ws.send_str('42["flood",300]')  # 30 MB, and this client reads none of it
    await wait_until(lambda: not sio.eio.sockets)
    await ws.close()


async def test_permessage_deflate_is_declined(bare: Any) -> None:
    client, _ = bare
    ws = await client.ws_connect(WS_PATH, compress=15)  # offers permessage-deflate, as browsers do
    assert ws.compress == 0
    assert (await ws.receive_str(timeout=5)).startswith("0{")
    await ws.close()
