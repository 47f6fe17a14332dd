"""The library's own transport, which realtime/transport.py's install() leaves in place when the installed
python-socketio / python-engineio / aiohttp are not the versions it was tested with (or when asked to):
nothing is rebound, a warning names the versions, and chat works over websocket and polling.

The rebinding is process-wide and other tests in this process apply it, so the in-process tests put
the library's members back for their duration (`library_members`); one test runs `python -m server`
in a fresh process, where nothing was ever rebound."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
import structlog
from aiohttp.test_utils import TestClient
from engineio.async_socket import AsyncSocket
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from handlers.keys import SIO
from realtime import bad_packets, transport
from realtime.server import create_sio
from server.app import create_app
from server.config import Settings
from tests.helpers import Inbox, connect_socket, free_port, make_chat, register, server_url, wait_until
from tests.processes import LOW_COST, ROOT, _env, _stop, _wait_healthy

OTHER_AIOHTTP = "3.99.0"
# Run as `python -c`: `python -m server` in a process that reports another aiohttp as installed.
SERVER_WITH_OTHER_AIOHTTP = f"""
import importlib.metadata, runpy, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: {OTHER_AIOHTTP!r} if name == "aiohttp" else real(name)
sys.argv = ["server"]
runpy.run_module("server", run_name="__main__", alter_sys=True)
"""


def _other_aiohttp(name: str, real: Any = importlib.metadata.version) -> str:
    return OTHER_AIOHTTP if name == "aiohttp" else str(real(name))


@pytest.fixture
def library_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's own members for this test, as in a process where install() never applied."""
    for (owner, name), original in transport.LIBRARY.items():
        monkeypatch.setattr(owner, name, original)
    monkeypatch.delattr(AsyncSocket, "direct", raising=False)
    monkeypatch.setattr(transport, "_applied", False)


def _library_in_place() -> bool:
    return all(owner.__dict__[name] is original for (owner, name), original in transport.LIBRARY.items())


@pytest.fixture
async def library_client(
    library_members: None, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any, settings: Settings
) -> TestClient:
    """The whole app, built where the installed aiohttp is not the tested one."""
    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "version", _other_aiohttp)  # for the check at start only
        app = create_app(settings)
    assert _library_in_place()
    return await aiohttp_client(app)


def test_tested_versions_are_the_pinned_and_installed_ones() -> None:
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    for name, version in transport.TESTED_WITH.items():
        assert f"{name}=={version}" in pins
    assert transport.differing_versions() == {}  # so the rest of the suite tests the fast path


def test_a_differing_version_keeps_the_library_transport_with_one_warning(
    library_members: None, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    with structlog.testing.capture_logs() as logs, monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "version", _other_aiohttp)
        sio = create_sio(redis_url=None, redis_prefix=settings.redis_prefix, cors_origins="*")
        assert transport.install(sio) is False
    assert _library_in_place() and not hasattr(sio.eio, "fast_message")
    assert AsyncSocket.direct is None  # the fan-out's test for a direct socket: never, so the library's queue
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 2 and "using the library's own transport" in warnings[0]["event"]
    assert warnings[0]["installed"] == {"aiohttp": OTHER_AIOHTTP} and warnings[0]["tested"] == {"aiohttp": "3.14.5"}


def test_install_applies_once_and_never_half(library_members: None, settings: Settings) -> None:
    sio = create_sio(redis_url=None, redis_prefix=settings.redis_prefix, cors_origins="*", library_transport=True)
    assert _library_in_place() and not hasattr(sio.eio, "fast_message")
    assert transport.install(sio) is True
    rebound = {(owner, name): owner.__dict__[name] for (owner, name) in transport.LIBRARY}
    assert all(rebound[owner, name] is not original for (owner, name), original in transport.LIBRARY.items())
    assert sio.eio.fast_message is not None
    other = create_sio(redis_url=None, redis_prefix=settings.redis_prefix, cors_origins="*")
    assert transport.install(other) is True and other.eio.fast_message is not None
    assert {(owner, name): owner.__dict__[name] for (owner, name) in transport.LIBRARY} == rebound
    # Sockets of this process already run the patched methods: the library's path cannot be had any more.
    with pytest.raises(RuntimeError):
        transport.install(other, library=True)


async def test_the_library_transport_carries_a_chat_over_websocket_and_polling(
    library_client: TestClient, sockets: list[Any]
) -> None:
    client = library_client
    user = await register(client)
    chat = await make_chat(client, user)
    phone = socketio.AsyncClient(reconnection=False)
    phone_inbox = Inbox(phone, "message:new", "ai:done")
    await connect_socket(client, user["access_token"], sio=phone)
    sockets.append(phone)
    laptop = socketio.AsyncClient(reconnection=False)  # polling first, then the upgrade: the clients' default
    laptop_inbox = Inbox(laptop, "message:new", "ai:done")
    await laptop.connect(server_url(client), auth={"token": user["access_token"]}, wait_timeout=5)
    sockets.append(laptop)

    payload = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "over the library"}
    ack = await phone.call("message:send", payload, timeout=10)
    assert ack["ok"] and ack["message"]["content"] == "over the library", ack
    for inbox in (phone_inbox, laptop_inbox):
        await wait_until(lambda inbox=inbox: bool(inbox["message:new"]) and bool(inbox["ai:done"]))
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind
    for inbox in (phone_inbox, laptop_inbox):
        assert [e["message"]["id"] for e in inbox["message:new"]] == [ack["message"]["id"]]
        assert len(inbox["ai:done"]) == 1
    assert laptop.transport() == "websocket"
    eio_sockets = list(client.app[SIO].eio.sockets.values())
    assert len(eio_sockets) == 2 and all(s.direct is None for s in eio_sockets)  # the fan-out used their queues
    assert _library_in_place()


async def test_the_library_transport_accepts_deflate_and_refuses_undecodable_packets(
    library_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A limiter of its own: the process-wide one allows a few warnings a minute, for other tests too.
    monkeypatch.setattr(bad_packets, "_limiter", FixedWindowRateLimiter(MemoryStorage()))
    client = library_client
    user = await register(client)
    ws = await client.ws_connect("/socket.io/?EIO=4&transport=websocket", compress=15)
    assert ws.compress == 15  # the library's driver takes permessage-deflate (Parlor's declines it)
    assert (await ws.receive_str(timeout=5)).startswith("0{")
    await ws.send_str("40" + json.dumps({"token": user["access_token"]}))

    async def receive(prefix: str) -> str:
        while True:
            text = await ws.receive_str(timeout=5)
            if text.startswith(prefix):
                return str(text)

    assert (await receive("40")).startswith('40{"sid":')
    with structlog.testing.capture_logs() as logs:
        await ws.send_str('421["sync",' + "[" * 5000 + "]" * 5000 + "]")
        answer = await receive("43")
        assert answer.startswith("431[") and json.loads(answer[3:])[0]["error"]["code"] == "invalid", answer
        for garbage in ("4X", "42[", '42["sync",{"a":}]', "45-"):
            await ws.send_str(garbage)
        await ws.send_str('422["sync",{"session_id":"' + str(uuid.uuid4()) + '","after_seq":0}]')
        answer = await receive("43")
    assert answer.startswith("432[") and json.loads(answer[3:])[0]["error"]["code"] == "not_found", answer
    await ws.close()
    refused = [e for e in logs if e["event"] == "malformed packet refused"]
    assert refused and all(e["log_level"] == "warning" for e in refused), logs


def test_importing_the_transport_rebinds_nothing() -> None:
    check = (
        "import realtime.server, realtime.transport as t\n"
        "assert all(o.__dict__[n] is v for (o, n), v in t.LIBRARY.items())\n"
        "assert all(v.__module__.startswith('engineio.') for v in t.LIBRARY.values())\n"
    )
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=_env(), check=True, timeout=60)


def _start_with_other_aiohttp(cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", SERVER_WITH_OTHER_AIOHTTP],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


async def test_a_server_process_with_another_aiohttp_serves_chat_on_the_library_transport(
    tmp_path: Path, empty_database: Any
) -> None:
    port = free_port()
    env = _env(
        PORT=str(port),
        DATABASE_URL=empty_database(),
        JWT_SECRET="s" * 48,
        DATA_DIR=str(tmp_path / "data"),
        DEMO_TOKEN_DELAY_MS="0",
        **LOW_COST,
    )
    log_path = tmp_path / "server.log"
    proc = _start_with_other_aiohttp(tmp_path, env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(port)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{url}/api/v1/auth/register", json={"email": f"{uuid.uuid4().hex}@example.com", "password": "p" * 12}
            )
            assert resp.status == 201, await resp.text()
            user = await resp.json()
            headers = {"Authorization": f"Bearer {user['access_token']}"}
            resp = await http.post(f"{url}/api/v1/personas", json={"name": "Library"}, headers=headers)
            assert resp.status == 201, await resp.text()
            persona = await resp.json()
            resp = await http.post(f"{url}/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=headers)
            assert resp.status == 201, await resp.text()
            chat = await resp.json()
        sio = socketio.AsyncClient(reconnection=False)
        inbox = Inbox(sio, "message:new", "ai:done")
        await sio.connect(url, auth={"token": user["access_token"]}, transports=["websocket"], wait_timeout=10)
        try:
            payload = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "hello"}
            ack = await sio.call("message:send", payload, timeout=10)
            assert ack["ok"], ack
            await wait_until(lambda: bool(inbox["message:new"]) and bool(inbox["ai:done"]))
            assert [e["message"]["id"] for e in inbox["message:new"]] == [ack["message"]["id"]]
        finally:
            await sio.disconnect()
    finally:
        code = _stop(proc)
    assert code == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    fallback = [line for line in lines if "using the library's own transport" in line.get("event", "")]
    assert len(fallback) == 1 and fallback[0]["level"] == "warning", lines
    assert fallback[0]["installed"] == {"aiohttp": OTHER_AIOHTTP}
