"""Socket connect (issue 2, check 4): accepted with a valid token, refused with a readable reason otherwise."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp.test_utils import TestClient

from server.config import Settings
from services.tokens import TokenSigner
from tests.helpers import SocketRefused, bearer, connect_socket, register


async def test_valid_token_connects_and_joins_user_room(client: TestClient, sockets: list[Any]) -> None:
    session = await register(client)
    sio = await connect_socket(client, session["access_token"])
    sockets.append(sio)
    assert sio.connected
    server = client.app  # the same app: its socket server knows the room
    from handlers.keys import SIO

    rooms = server[SIO].manager.rooms["/"]
    assert f"user:{session['user']['id']}" in rooms


@pytest.mark.parametrize("token", [None, "", "forged.jwt.token"])
async def test_missing_or_forged_token_is_refused(client: TestClient, token: str | None) -> None:
    with pytest.raises(SocketRefused) as refused:
        await connect_socket(client, token)
    assert refused.value.message
    assert refused.value.data["code"] in ("unauthorized", "invalid_token")


async def test_token_signed_with_another_secret_is_refused(client: TestClient) -> None:
    session = await register(client)
    other = TokenSigner("z" * 48, ttl_seconds=60)
    forged = other.issue(user_id=session["user"]["id"], session_version=0, role="admin")
    with pytest.raises(SocketRefused) as refused:
        await connect_socket(client, forged)
    assert refused.value.data == {"code": "invalid_token"}


async def test_expired_token_is_refused_with_token_expired(client: TestClient, settings: Settings) -> None:
    session = await register(client)
    assert settings.jwt_secret is not None
    signer = TokenSigner(settings.jwt_secret.get_secret_value(), ttl_seconds=60)
    expired = signer.issue(user_id=session["user"]["id"], session_version=0, role="user", now=time.time() - 3600)
    with pytest.raises(SocketRefused) as refused:
        await connect_socket(client, expired)
    assert refused.value.data == {"code": "token_expired"}
    assert "expired" in refused.value.message


async def test_banned_user_is_refused_and_live_socket_closed(
    client: TestClient, settings: Settings, sockets: list[Any]
) -> None:
    admin = await register(client)
    victim = await register(client)
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", admin["user"]["id"])
    await conn.close()

    live = await connect_socket(client, victim["access_token"])
    sockets.append(live)
    ended: list[Any] = []
    live.on("session:ended", lambda data: ended.append(data))

    resp = await client.post(
        f"/api/v1/admin/users/{victim['user']['id']}/ban", json={"reason": "spam"}, headers=bearer(admin)
    )
    assert resp.status == 200, await resp.text()
    for _ in range(50):
        if not live.connected:
            break
        await asyncio.sleep(0.05)
    assert not live.connected
    assert ended == [{"reason": "banned"}]

    # Old access token: refused (the ban ends sessions); a new login: refused as banned.
    with pytest.raises(SocketRefused):
        await connect_socket(client, victim["access_token"])
    me = await client.get("/api/v1/auth/me", headers=bearer(victim))
    assert me.status == 401
    login = await client.post(
        "/api/v1/auth/login", json={"email": victim["user"]["email"], "password": "correct horse battery"}
    )
    assert login.status == 403
    assert (await login.json())["error"]["code"] == "banned"

    # A token minted before the ban but with the current session version (as if cached) is refused as banned.
    assert settings.jwt_secret is not None
    signer = TokenSigner(settings.jwt_secret.get_secret_value(), ttl_seconds=60)
    current = signer.issue(user_id=victim["user"]["id"], session_version=1, role="user")
    with pytest.raises(SocketRefused) as refused:
        await connect_socket(client, current)
    assert refused.value.data == {"code": "banned"}

    unban = await client.post(f"/api/v1/admin/users/{victim['user']['id']}/unban", headers=bearer(admin))
    assert unban.status == 200
    again = await client.post(
        "/api/v1/auth/login", json={"email": victim["user"]["email"], "password": "correct horse battery"}
    )
    assert again.status == 200
    sio = await connect_socket(client, (await again.json())["access_token"])
    sockets.append(sio)
    assert sio.connected

    audit = await client.get("/api/v1/admin/audit-log", headers=bearer(admin))
    actions = [e["action"] for e in (await audit.json())["items"] if e["target_id"] == victim["user"]["id"]]
    assert actions == ["user.unban", "user.ban"]


async def test_non_admin_cannot_ban(client: TestClient) -> None:
    alice = await register(client)
    bob = await register(client)
    resp = await client.post(f"/api/v1/admin/users/{bob['user']['id']}/ban", json={}, headers=bearer(alice))
    assert resp.status == 403
    assert (await client.get("/api/v1/auth/me", headers=bearer(bob))).status == 200


class RefusalRecorder(socketio.AsyncClient):
    """Keeps what each `connect_error` carried. AsyncSimpleClient makes its AsyncClient inside connect() and
    raises only a generic ConnectionError, so this is where a simple client's user finds the reason."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals: list[Any] = []
        self.on("connect_error", self.refusals.append)


class RecordingSimpleClient(socketio.AsyncSimpleClient):
    client_class = RefusalRecorder


async def test_socketio_client_sees_reason_via_simple_client(client: TestClient) -> None:
    simple = RecordingSimpleClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await simple.connect(str(client.make_url("")), auth={"token": "bad"}, transports=["websocket"])
    assert isinstance(simple.client, RefusalRecorder) and not simple.connected
    # Refused for the token, with the stable code and a message a person can read, not any connection error.
    [refusal] = simple.client.refusals
    assert isinstance(refusal, dict) and refusal.get("data") == {"code": "invalid_token"}, refusal
    assert "token" in str(refusal.get("message")).lower(), refusal
