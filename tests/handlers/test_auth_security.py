"""Auth hardening (issue 11): admins only by proof or command (defect 12), revoked sessions and the
refresh grace window (defect 14), rate limits that cannot lock the owner out (defect 15)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp.test_utils import TestClient

from realtime import guard
from server.app import create_app
from server.config import Settings
from tests.fakes.firebase_tokens import PROJECT_ID, emulator_id_token
from tests.helpers import (
    PASSWORD,
    SocketRefused,
    bearer,
    connect_socket,
    free_port,
    register,
    unique_email,
    wait_until,
)

R = "/api/v1/auth"


def fresh(settings: Settings, **overrides: Any) -> Settings:
    """The test settings with their own Redis prefix (rate-limit counters of their own) and overrides."""
    return settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}-{uuid.uuid4().hex[:8]}", **overrides})


def from_ip(ip: str) -> dict[str, str]:
    """The test client is 127.0.0.1; with TRUSTED_PROXIES=127.0.0.1/32 this header is the client's address."""
    return {"X-Forwarded-For": ip}


def some_ip() -> str:
    return f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


async def me(client: TestClient, session: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"{R}/me", headers=bearer(session))
    return resp.status, await resp.json()


async def refresh(client: TestClient, refresh_token: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{R}/refresh", json={"refresh_token": refresh_token})
    return resp.status, await resp.json()


# --- defect 12: ADMIN_EMAILS needs a verified identity ------------------------------------------


async def test_registering_or_logging_in_with_a_listed_email_does_not_make_an_admin(
    aiohttp_client: Any, settings: Settings
) -> None:
    email = unique_email("boss")
    client = await aiohttp_client(create_app(fresh(settings, admin_emails=f"other@example.com, {email.upper()}")))
    registered = await register(client, email)
    assert registered["user"]["role"] == "user"
    login = await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200
    assert (await login.json())["user"]["role"] == "user"
    assert (await me(client, registered))[1]["role"] == "user"


@pytest.fixture
async def fb_admin(aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Firebase-enabled client (Auth-emulator tokens) whose ADMIN_EMAILS lists the given emails."""
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", f"127.0.0.1:{free_port()}")

    async def make(*emails: str) -> TestClient:
        updated = fresh(settings, firebase_project_id=PROJECT_ID, admin_emails=",".join(emails))
        return await aiohttp_client(create_app(updated))

    return make


async def test_verified_firebase_email_on_the_list_makes_an_admin(fb_admin: Any, settings: Settings) -> None:
    listed, unverified = unique_email("owner"), unique_email("claimer")
    client = await fb_admin(listed, unverified)
    resp = await client.post(f"{R}/firebase", json={"id_token": emulator_id_token(uuid.uuid4().hex, email=listed)})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user"]["role"] == "admin" and body["created"] is True
    assert (await me(client, body))[1]["role"] == "admin"

    # An unverified Google email proves nothing.
    token = emulator_id_token(uuid.uuid4().hex, email=unverified, email_verified=False)
    resp = await client.post(f"{R}/firebase", json={"id_token": token})
    assert resp.status == 200
    assert (await resp.json())["user"]["role"] == "user"

    conn = await asyncpg.connect(settings.database_url)
    try:
        audit = await conn.fetch(
            "SELECT action, actor_id, details FROM audit_log WHERE target_id = $1", body["user"]["id"]
        )
    finally:
        await conn.close()
    assert [(r["action"], r["actor_id"]) for r in audit] == [("user.promote", None)]


async def test_a_squatters_password_account_is_not_promoted_by_the_owners_google_sign_in(fb_admin: Any) -> None:
    """Someone registers the listed address with a password first; the owner's verified Google sign-in
    links to that account but does not make it an admin (the squatter knows its password)."""
    email = unique_email("admin")
    client = await fb_admin(email)
    await register(client, email)
    resp = await client.post(f"{R}/firebase", json={"id_token": emulator_id_token(uuid.uuid4().hex, email=email)})
    assert resp.status == 200
    assert (await resp.json())["user"]["role"] == "user"
    squatter = await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})
    assert (await squatter.json())["user"]["role"] == "user"


# --- defect 14: a revoked session's access tokens stop at once ----------------------------------


async def test_reuse_refuses_the_familys_access_tokens_at_once_on_rest_and_socket(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(fresh(settings, refresh_reuse_grace_seconds=0)))
    email = unique_email()
    first = await register(client, email)
    other_device = await (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).json()
    status, second = await refresh(client, first["refresh_token"])
    assert status == 200
    assert (await me(client, first))[0] == 200 and (await me(client, second))[0] == 200

    status, body = await refresh(client, first["refresh_token"])  # the rotated token again: reuse
    assert status == 401 and body["error"]["code"] == "token_reused"

    for session in (first, second):
        status, body = await me(client, session)
        assert status == 401 and body["error"]["code"] == "session_ended"
    with pytest.raises(SocketRefused) as refused:
        await connect_socket(client, second["access_token"])
    assert refused.value.data == {"code": "session_ended"}
    assert (await me(client, other_device))[0] == 200  # another session of the same user is untouched


async def test_revoked_session_is_refused_on_another_node_at_once(aiohttp_client: Any, settings: Settings) -> None:
    shared = fresh(settings, refresh_reuse_grace_seconds=0)
    node_a = await aiohttp_client(create_app(shared))
    node_b = await aiohttp_client(create_app(shared))
    session = await register(node_a)
    assert (await me(node_b, session))[0] == 200
    status, rotated = await refresh(node_a, session["refresh_token"])
    assert status == 200
    assert (await refresh(node_a, session["refresh_token"]))[0] == 401
    for token in (session, rotated):
        status, body = await me(node_b, token)
        assert status == 401 and body["error"]["code"] == "session_ended"


async def test_without_redis_a_revoked_session_stays_refused_after_a_restart(
    aiohttp_client: Any, settings: Settings
) -> None:
    single = fresh(settings, redis_url=None, refresh_reuse_grace_seconds=0)
    client = await aiohttp_client(create_app(single))
    session = await register(client)
    await refresh(client, session["refresh_token"])
    assert (await refresh(client, session["refresh_token"]))[0] == 401
    assert (await me(client, session))[0] == 401
    restarted = await aiohttp_client(create_app(single))
    status, body = await me(restarted, session)
    assert status == 401 and body["error"]["code"] == "session_ended"


async def test_with_redis_down_a_revoked_session_is_still_refused(aiohttp_client: Any, settings: Settings) -> None:
    down = fresh(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", refresh_reuse_grace_seconds=0)
    node_a = await aiohttp_client(create_app(down))
    node_b = await aiohttp_client(create_app(down))  # started before the revocation: knows nothing of it
    session = await register(node_a)
    await refresh(node_a, session["refresh_token"])
    assert (await refresh(node_a, session["refresh_token"]))[0] == 401
    for node in (node_a, node_b):
        status, body = await me(node, session)
        assert status == 401 and body["error"]["code"] == "session_ended"


async def test_logout_ends_that_sessions_access_token_too(client: TestClient) -> None:
    email = unique_email()
    phone = await register(client, email)
    laptop = await (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).json()
    resp = await client.post(f"{R}/logout", json={"refresh_token": phone["refresh_token"]}, headers=bearer(phone))
    assert resp.status == 204
    status, body = await me(client, phone)
    assert status == 401 and body["error"]["code"] == "session_ended"
    assert (await me(client, laptop))[0] == 200


async def test_live_socket_of_a_revoked_session_is_refused_on_its_next_event(
    aiohttp_client: Any, settings: Settings, sockets: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "CACHE_SECONDS", 0.0)  # the 5 s per-user cache would delay the check
    client = await aiohttp_client(create_app(fresh(settings, refresh_reuse_grace_seconds=0)))
    session = await register(client)
    sio = socketio.AsyncClient(reconnection=False)
    await connect_socket(client, session["access_token"], sio=sio)
    sockets.append(sio)
    await refresh(client, session["refresh_token"])
    await refresh(client, session["refresh_token"])  # reuse
    # The guard refuses the event with session_ended and closes the socket (the ack may not arrive first).
    try:
        ack = await sio.call("chat:join", {"session_id": str(uuid.uuid4())}, timeout=2)
        assert ack["error"]["code"] == "session_ended"
    except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
        pass
    await wait_until(lambda: not sio.connected, limit=5)


# --- defect 14: the grace window for concurrent refreshes ---------------------------------------


async def test_two_concurrent_refreshes_of_one_token_both_get_the_same_pair(client: TestClient) -> None:
    session = await register(client)
    (status_a, a), (status_b, b) = await asyncio.gather(
        refresh(client, session["refresh_token"]), refresh(client, session["refresh_token"])
    )
    assert (status_a, status_b) == (200, 200), (a, b)
    assert a["refresh_token"] == b["refresh_token"] != session["refresh_token"]
    assert a["access_token"] == b["access_token"]
    assert (await me(client, a))[0] == 200
    status, rotated = await refresh(client, a["refresh_token"])  # the family lives on
    assert status == 200 and (await me(client, rotated))[0] == 200


async def test_replay_within_the_window_returns_the_same_pair_and_after_it_revokes(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(fresh(settings, refresh_reuse_grace_seconds=1)))
    session = await register(client)
    status, first = await refresh(client, session["refresh_token"])
    assert status == 200
    status, again = await refresh(client, session["refresh_token"])
    assert status == 200
    assert (again["access_token"], again["refresh_token"]) == (first["access_token"], first["refresh_token"])
    assert (await me(client, first))[0] == 200

    await asyncio.sleep(1.2)  # past the window: the old token is a leaked one now
    status, body = await refresh(client, session["refresh_token"])
    assert status == 401 and body["error"]["code"] == "token_reused"
    assert (await refresh(client, first["refresh_token"]))[0] == 401
    assert (await me(client, first))[1]["error"]["code"] == "session_ended"


async def test_replay_after_the_successor_was_itself_rotated_is_reuse(client: TestClient) -> None:
    session = await register(client)
    status, first = await refresh(client, session["refresh_token"])
    status, second = await refresh(client, first["refresh_token"])
    assert status == 200
    status, body = await refresh(client, session["refresh_token"])
    assert status == 401 and body["error"]["code"] == "token_reused"
    assert (await refresh(client, second["refresh_token"]))[0] == 401


# --- defect 15: rate limits ---------------------------------------------------------------------


async def test_register_is_limited_per_client_address(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(fresh(settings, register_rate_per_hour=3, trusted_proxies="127.0.0.1/32")))
    ip = some_ip()
    statuses = []
    for _ in range(4):
        resp = await client.post(
            f"{R}/register", json={"email": unique_email(), "password": PASSWORD}, headers=from_ip(ip)
        )
        statuses.append(resp.status)
    assert statuses == [201, 201, 201, 429]
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited" and int(resp.headers["Retry-After"]) >= 1
    other = await client.post(
        f"{R}/register", json={"email": unique_email(), "password": PASSWORD}, headers=from_ip(some_ip())
    )
    assert other.status == 201


async def test_a_strangers_wrong_passwords_do_not_lock_the_owner_out(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(fresh(settings, login_rate_per_minute=3, trusted_proxies="127.0.0.1/32")))
    email = unique_email()
    await register(client, email)
    stranger, owner = some_ip(), some_ip()
    statuses = []
    for _ in range(4):
        resp = await client.post(
            f"{R}/login", json={"email": email, "password": "wrong pass"}, headers=from_ip(stranger)
        )
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 429]
    right = await client.post(f"{R}/login", json={"email": email, "password": PASSWORD}, headers=from_ip(owner))
    assert right.status == 200, await right.text()


async def test_failures_from_many_addresses_hit_the_slower_per_account_ceiling(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(
            fresh(settings, login_rate_per_minute=3, login_account_rate_per_hour=4, trusted_proxies="127.0.0.1/32")
        )
    )
    email = unique_email()
    await register(client, email)
    statuses = []
    for _ in range(5):  # one guess from each of five addresses
        resp = await client.post(
            f"{R}/login", json={"email": email, "password": "wrong pass"}, headers=from_ip(some_ip())
        )
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 401, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    # Another account is not affected by this one's ceiling.
    other = unique_email()
    await register(client, other)
    resp = await client.post(f"{R}/login", json={"email": other, "password": PASSWORD}, headers=from_ip(some_ip()))
    assert resp.status == 200
