"""Every socket event answers, whatever happens (issue 11, defects 2, 6, 8 and 11): faults answer
`internal`, a database that is down answers `unavailable`, out-of-range numbers `invalid`; reserved
event names are refused on every transport; undecodable packets get an `invalid` ack and the socket
stays; malformed packets write one rate-limited warning, never a traceback each."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import socketio
import structlog
from aiohttp.test_utils import TestClient

from core.events import ClientPayload as Payload
from handlers.keys import AUTH_SERVICE, METRICS, SIO
from realtime.acks import EventRegistry
from realtime.guard import SocketUsers
from server.app import create_app
from server.config import Settings
from tests.helpers import SocketRefused, connect_socket, make_chat, make_plain_chat, register, server_url
from tests.netproxy import TcpProxy
from tests.realtime.test_transport import open_raw


def _send(chat: dict[str, Any], text: str = "hello") -> dict[str, Any]:
    return {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": text}


async def test_unexpected_error_answers_internal(client: TestClient, sockets: list[Any]) -> None:
    app = client.server.app
    registry = EventRegistry(app[SIO], SocketUsers(app[SIO], app[AUTH_SERVICE]), app[METRICS])

    @registry.on("test:boom", Payload)
    async def boom(sid: str, user: Any, payload: Payload) -> dict[str, Any]:
        raise RuntimeError("a bug")

    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    with structlog.testing.capture_logs() as logs:
        ack = await sio.call("test:boom", {}, timeout=5)
    assert ack == {"ok": False, "error": {"code": "internal", "message": "internal error"}}
    failure = [e for e in logs if e["event"] == "socket event failed"]
    assert failure and failure[0]["socket_event"] == "test:boom" and failure[0]["log_level"] == "error"


async def test_out_of_range_sync_is_invalid(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    ack = await sio.call("sync", {"session_id": chat["id"], "after_seq": 2**63}, timeout=5)
    assert ack["ok"] is False and ack["error"]["code"] == "invalid"
    assert ack["error"]["details"][0]["field"] == "after_seq"
    resumed = await sio.call("ai:resume", {"stream_id": str(uuid.uuid4()), "from_index": 2**64}, timeout=5)
    assert resumed["error"]["code"] == "invalid" and resumed["error"]["details"][0]["field"] == "from_index"


@pytest.fixture
async def pg_proxy(database_url: str) -> Any:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    proxy.url = urlunsplit(target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}"))  # type: ignore[attr-defined]
    yield proxy
    await proxy.close()


async def test_database_down_answers_unavailable_then_recovers(
    aiohttp_client: Any, settings: Settings, pg_proxy: Any, sockets: list[Any]
) -> None:
    client = await aiohttp_client(create_app(settings.model_copy(update={"database_url": pg_proxy.url})))
    user = await register(client)
    chat = await make_plain_chat(client, user)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    assert (await sio.call("message:send", _send(chat, "before"), timeout=5))["ok"]
    await pg_proxy.cut()
    for event, payload in [
        ("message:send", _send(chat, "while down")),
        ("sync", {"session_id": chat["id"], "after_seq": 0}),
        ("chat:join", {"session_id": chat["id"]}),
    ]:
        ack = await sio.call(event, payload, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", (event, ack)
    with pytest.raises(SocketRefused) as refused:  # a new socket is told why, not left hanging
        await connect_socket(client, user["access_token"])
    assert refused.value.data == {"code": "unavailable"}
    await pg_proxy.restore()
    assert (await sio.call("message:send", _send(chat, "after"), timeout=10))["ok"]
    synced = await sio.call("sync", {"session_id": chat["id"], "after_seq": 0}, timeout=5)
    assert [m["content"] for m in synced["messages"]] == ["before", "after"]


async def _gauge(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    line = next(x for x in text.splitlines() if x.startswith("parlor_sockets_connected "))
    return float(line.split()[1])


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_reserved_event_names_are_refused(client: TestClient, sockets: list[Any], transport: str) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    sio = socketio.AsyncClient(reconnection=False)
    sockets.append(sio)
    await sio.connect(server_url(client), auth={"token": user["access_token"]}, transports=[transport])
    other = await connect_socket(client, user["access_token"])
    sockets.append(other)
    presence: list[Any] = []
    other.on("presence", lambda data: presence.append(data))
    before = await _gauge(client)
    for payload in ({}, b"\x00binary"):  # a JSON event, and a binary one (attachments)
        for name in ("disconnect", "connect"):
            ack = await sio.call(name, payload, timeout=5)
            assert ack["ok"] is False and ack["error"]["code"] == "unknown_event", (name, ack)
    assert await _gauge(client) == before
    assert presence == []  # nobody went offline
    assert sio.connected and (await sio.call("chat:join", {"session_id": chat["id"]}, timeout=5))["ok"]
    await sio.eio.disconnect(abort=True)  # a polling client's polite disconnect waits out its long poll


async def _receive(ws: Any, prefix: str) -> str:
    """The next text packet starting with `prefix`, skipping server events (presence and the like)."""
    while True:
        packet = await ws.receive_str(timeout=5)
        if packet.startswith(prefix):
            return str(packet)


async def test_undecodable_packets_get_an_invalid_ack_and_the_socket_stays(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = await register(client)
    ws = await client.ws_connect("/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str(timeout=5)).startswith("0{")
    await ws.send_str("40" + json.dumps({"token": user["access_token"]}))
    assert (await _receive(ws, "40")).startswith('40{"sid":')
    deep = "[" * 5000 + "]" * 5000
    caplog.set_level(logging.WARNING)
    with structlog.testing.capture_logs() as logs:
        await ws.send_str(f'421["sync",{deep}]')
        answer = await _receive(ws, "43")
        assert answer.startswith("431[") and json.loads(answer[3:])[0]["error"]["code"] == "invalid", answer
        # Garbage of every kind, many times: no traceback, one warning line a minute at most per layer.
        for _ in range(30):
            for garbage in ("4X", "42[", '42["sync",{"a":}]', "45-", "4", "49", "42abc"):
                await ws.send_str(garbage)
        await ws.send_str('422["sync",{"session_id":"' + str(uuid.uuid4()) + '","after_seq":0}]')
        answer = await _receive(ws, "43")
    assert answer.startswith("432[") and json.loads(answer[3:])[0]["error"]["code"] == "not_found", answer
    await ws.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    refused = [e for e in logs if e["event"] == "malformed packet refused"]
    assert 1 <= len(refused) <= 10 and all(e["log_level"] == "warning" for e in refused), refused
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs


async def test_undecodable_packets_over_long_polling(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    user = await register(client)
    _sid, post, poll = await open_raw_polling(client, user["access_token"])
    caplog.set_level(logging.WARNING)
    with structlog.testing.capture_logs() as logs:
        await post(f'421["sync",{"[" * 5000 + "]" * 5000}]')
        assert any(p.startswith("431[") and '"invalid"' in p for p in await poll()), "no invalid ack"
        for _ in range(20):
            for garbage in ("4X", "42[", '42["sync",{"a":}]', "45-", "4"):
                await post(garbage)
            for body in (b"b!!!", b"\xff\xfe", b"4\xff"):  # broken at the Engine.IO layer
                resp = await client.post(f"/socket.io/?EIO=4&transport=polling&sid={_sid}", data=body)
                assert resp.status == 200
        await post('422["sync",{"session_id":"' + str(uuid.uuid4()) + '","after_seq":0}]')
        assert any(p.startswith("432[") and '"not_found"' in p for p in await poll())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    assert 1 <= len([e for e in logs if e["event"] == "malformed packet refused"]) <= 10


async def open_raw_polling(client: TestClient, token: str) -> Any:
    """Engine.IO v4 long-polling by hand: (sid, post(packet), poll() -> packets)."""
    base = "/socket.io/?EIO=4&transport=polling"
    opened = await (await client.get(base)).text()
    sid = json.loads(opened[1:])["sid"]
    url = f"{base}&sid={sid}"

    async def post(packet: str) -> None:
        resp = await client.post(url, data=packet.encode())
        assert resp.status == 200, await resp.text()

    async def poll() -> list[str]:
        return (await (await client.get(url)).text()).split("\x1e")

    await post("40" + json.dumps({"token": token}))
    assert any(p.startswith('40{"sid":') for p in await poll())
    return sid, post, poll


__all__ = ["open_raw"]
