"""Helpers shared by the tests: settings, users, tokens and socket clients."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import socketio
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

# Re-exported for the tests: the bench starts servers on 127.0.0.1 with the same helpers.
from bench.infra import free_port as free_port
from bench.infra import port_open as port_open
from bench.infra import with_database as with_database
from core.events import SERVER_EVENTS
from server.config import Settings

PASSWORD = "correct horse battery"


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "jwt_secret": "test-secret-" + "x" * 40,
        "login_rate_per_minute": 10_000,
        # Tests register hundreds of users from 127.0.0.1; the tests of that limit set their own.
        "register_rate_per_hour": 0,
        "send_rate_per_minute": 100_000,
        # Unlimited daily AI messages unless a test is about the quota (then it sets its own).
        "free_daily_messages": 0,
        # Cheaper hashing keeps hundreds of registrations fast; the code path is the same.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        "log_format": "console",
        # Every user message gets a (demo) AI reply; keep them instant so tests stay fast.
        "demo_token_delay_ms": 0,
        "shutdown_timeout_seconds": 3,
        "upload_rate_per_minute": 100_000,
        # One image worker per test app: spawned on the first image only.
        "image_workers": 1,
    }
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def register(client: TestClient, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
    resp = await client.post("/api/v1/auth/register", json={"email": email or unique_email(), "password": password})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def make_admin(client: TestClient, database_url: str) -> dict[str, Any]:
    """A registered user made an admin the way an operator does it: in the database."""
    user = await register(client)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(user["user"]["id"]))
    finally:
        await conn.close()
    return user


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['access_token']}"}


def server_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


class SocketRefused(Exception):
    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


async def connect_socket(
    client: TestClient, token: str | None, *, sio: socketio.AsyncClient | None = None
) -> socketio.AsyncClient:
    """A connected python-socketio client, or SocketRefused carrying the server's reason. Pass `sio` to
    register event handlers before connecting (events sent during connect would be missed otherwise)."""
    sio = sio or socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []

    @sio.event
    async def connect_error(data: Any) -> None:
        refused.append(data)

    auth = {"token": token} if token is not None else None
    try:
        await sio.connect(server_url(client), auth=auth, transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError as err:
        data = refused[0] if refused else {}
        message = data.get("message", str(err)) if isinstance(data, dict) else str(data)
        raise SocketRefused(message, data.get("data") if isinstance(data, dict) else None) from err
    return sio


async def make_persona(client: TestClient, session: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": f"Persona {uuid.uuid4().hex[:6]}", **fields}
    resp = await client.post("/api/v1/personas", json=body, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def make_chat(client: TestClient, session: dict[str, Any], **persona_fields: Any) -> dict[str, Any]:
    persona = await make_persona(client, session, **persona_fields)
    resp = await client.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def make_plain_chat(client: TestClient, session: dict[str, Any]) -> dict[str, Any]:
    """A chat whose persona was deleted: no AI replies, nothing charged; its sends are group-committed."""
    chat = await make_chat(client, session)
    resp = await client.delete(f"/api/v1/personas/{chat['persona_id']}", headers=bearer(session))
    assert resp.status == 204, await resp.text()
    return chat


async def send_message(client: TestClient, session: dict[str, Any], chat_id: str, content: str) -> dict[str, Any]:
    """A message sent over REST (no socket needed); the stored message."""
    body = {"client_id": str(uuid.uuid4()), "content": content}
    resp = await client.post(f"/api/v1/chat/sessions/{chat_id}/messages", json=body, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def list_notifications(client: TestClient, session: dict[str, Any]) -> list[dict[str, Any]]:
    """The user's newest notifications (one page)."""
    resp = await client.get("/api/v1/notifications", headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def wait_until(predicate: Any, limit: float = 10.0) -> None:
    """Poll `predicate` until it holds; fail the test after `limit` seconds."""
    import asyncio
    import time

    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def event_problem(name: str, *args: Any) -> str | None:
    """Why a received server event breaks the contract (core/events.py), or None: an unknown name, not
    exactly one payload, a payload that does not validate strictly (as JSON: no "3" for 3, no unknown key)
    or that is not exactly what its model serialises to."""
    model = SERVER_EVENTS.get(name)
    if model is None:
        return f"{name!r} is not a server event in core/events.py"
    if len(args) != 1:
        return f"{name}: {len(args)} arguments, expected one payload"
    try:
        event = model.model_validate_json(json.dumps(args[0]), strict=True)
    except ValidationError as err:
        return f"{name} {args[0]!r}: {err}"
    if event.model_dump(mode="json") != args[0]:
        return f"{name} {args[0]!r}: not as {model.__name__} serialises it: {event.model_dump(mode='json')!r}"
    return None


class Inbox:
    """Records the events a socket receives, by name, and checks every event the socket receives (those
    named and, through a catch-all handler, any other) against its model with `event_problem`. A bad event
    fails the test when it next reads the inbox: a handler's exception would only be logged by the client."""

    def __init__(self, sio: socketio.AsyncClient, *names: str) -> None:
        unknown = [name for name in names if name not in SERVER_EVENTS]
        assert not unknown, f"not server events in core/events.py: {unknown}"
        self.events: dict[str, list[Any]] = {name: [] for name in names}
        self.problems: list[str] = []
        for name in names:
            sio.on(name, self._recorder(name))
        if "*" not in sio.handlers.get("/", {}):
            sio.on("*", self._other)

    def _recorder(self, name: str) -> Any:
        async def record(*args: Any) -> None:
            self._check(name, *args)
            self.events[name].append(args[0] if args else None)

        return record

    async def _other(self, name: str, *args: Any) -> None:
        self._check(name, *args)

    def _check(self, name: str, *args: Any) -> None:
        problem = event_problem(name, *args)
        if problem is not None:
            self.problems.append(problem)

    def check(self) -> None:
        assert not self.problems, "events that break the contract:\n" + "\n".join(self.problems)

    def __getitem__(self, name: str) -> list[Any]:
        self.check()
        return self.events[name]


async def settled_rows(database_url: str, session_id: str, limit: float = 20.0) -> list[dict[str, Any]]:
    """The session's stored messages once every user message is answered and no AI reply streams, in
    seq order (replies chain: one ending starts the next for messages that came meanwhile)."""
    import asyncio
    import time

    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + limit
        while True:
            rows = await conn.fetch(
                "SELECT id, seq, role, content, status FROM messages WHERE session_id = $1 ORDER BY seq",
                uuid.UUID(session_id),
            )
            if rows and rows[-1]["role"] == "assistant" and rows[-1]["status"] != "streaming":
                return [{**dict(r), "id": str(r["id"])} for r in rows]
            assert time.monotonic() < deadline, "the session's replies did not settle"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


JS_DIR = Path(__file__).resolve().parent / "js"


async def run_node_checks(script: str, env: dict[str, str], *, limit: float) -> list[str]:
    """Run a tests/js script under node with `env` added; it prints `{"ok": true, "checks": [...]}` last.
    Fails the test with the script's output when it exits non-zero. Returns the names of its checks."""
    import asyncio
    import os
    import shutil

    js_dir = JS_DIR
    node = shutil.which("node")
    assert node, "node is required (Node 20+)"
    assert (js_dir / "node_modules").exists(), "run: npm ci --prefix tests/js"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(js_dir / script),
        cwd=js_dir,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=limit)
    assert proc.returncode == 0, stderr.decode() + stdout.decode()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["ok"] is True
    return list(summary["checks"])
