"""Auth over REST (issue 2, check 3) and the bad-input rules of SPEC §12."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.helpers import PASSWORD, bearer, register, unique_email

R = "/api/v1/auth"


@pytest.fixture
async def no_grace(aiohttp_client: Any, settings: Settings) -> TestClient:
    """Reuse counts at once (no grace window; tests/handlers/test_auth_security.py tests the window)."""
    return await aiohttp_client(create_app(settings.model_copy(update={"refresh_reuse_grace_seconds": 0})))


async def test_register_returns_user_and_tokens(client: TestClient) -> None:
    email = unique_email()
    resp = await client.post(f"{R}/register", json={"email": email, "password": PASSWORD, "display_name": "Ann"})
    assert resp.status == 201
    body = await resp.json()
    assert body["user"]["email"] == email
    assert body["user"]["display_name"] == "Ann"
    assert body["user"]["role"] == "user" and body["user"]["plan"] == "free" and body["user"]["timezone"] == "UTC"
    assert body["access_token"] and body["refresh_token"] and body["expires_in"] > 0
    me = await client.get(f"{R}/me", headers=bearer(body))
    assert me.status == 200
    assert (await me.json())["id"] == body["user"]["id"]


async def test_same_email_twice_is_409_case_insensitive(client: TestClient) -> None:
    email = unique_email()
    await register(client, email)
    resp = await client.post(f"{R}/register", json={"email": email.upper(), "password": PASSWORD})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "email_taken"


async def test_malformed_email_and_short_password_name_the_field(client: TestClient) -> None:
    resp = await client.post(f"{R}/register", json={"email": "not-an-email", "password": PASSWORD})
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["code"] == "invalid" and err["details"][0]["field"] == "email"

    resp = await client.post(f"{R}/register", json={"email": unique_email(), "password": "short"})
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert [d["field"] for d in err["details"]] == ["password"]
    assert err["message"].startswith("password:")


async def test_bad_bodies_never_500(client: TestClient) -> None:
    cases: list[tuple[Any, int, str | None]] = [
        ({"email": unique_email(), "password": PASSWORD, "admin": True}, 422, "admin"),  # unknown field
        ({"email": 42, "password": PASSWORD}, 422, "email"),  # wrong type
        ({"password": PASSWORD}, 422, "email"),  # missing field
        ([1, 2, 3], 422, "body"),  # not an object
        ({"email": unique_email(), "password": PASSWORD, "display_name": "a\u0000b"}, 422, "display_name"),
    ]
    for body, status, field in cases:
        resp = await client.post(f"{R}/register", json=body)
        assert resp.status == status, (body, await resp.text())
        details = (await resp.json())["error"]["details"]
        assert field in [d["field"] for d in details]
    resp = await client.post(f"{R}/register", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"


async def test_oversized_body_is_413(client: TestClient) -> None:
    huge = {"email": unique_email(), "password": "p" * 2_000_000}
    resp = await client.post(f"{R}/register", json=huge)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_login_wrong_password_401_right_password_200(client: TestClient) -> None:
    email = unique_email()
    await register(client, email)
    resp = await client.post(f"{R}/login", json={"email": email, "password": "wrong password"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_credentials"
    resp = await client.post(f"{R}/login", json={"email": unique_email(), "password": "whatever1"})
    assert resp.status == 401
    resp = await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 200
    assert (await resp.json())["user"]["email"] == email


async def test_refresh_rotates_and_replay_revokes_family(no_grace: TestClient) -> None:
    client = no_grace
    first = await register(client)
    resp = await client.post(f"{R}/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status == 200
    second = await resp.json()
    assert second["refresh_token"] != first["refresh_token"]

    # Replaying the rotated token: refused, and the family (including the new token) dies.
    replay = await client.post(f"{R}/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status == 401
    assert (await replay.json())["error"]["code"] == "token_reused"
    after = await client.post(f"{R}/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status == 401

    garbage = await client.post(f"{R}/refresh", json={"refresh_token": "nope"})
    assert garbage.status == 401


async def test_replay_does_not_touch_other_sessions(no_grace: TestClient) -> None:
    client = no_grace
    email = unique_email()
    phone = await register(client, email)
    laptop = await (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).json()
    rotated = await (await client.post(f"{R}/refresh", json={"refresh_token": phone["refresh_token"]})).json()
    await client.post(f"{R}/refresh", json={"refresh_token": phone["refresh_token"]})  # replay
    assert (await client.post(f"{R}/refresh", json={"refresh_token": rotated["refresh_token"]})).status == 401
    assert (await client.post(f"{R}/refresh", json={"refresh_token": laptop["refresh_token"]})).status == 200


async def test_logout_revokes_that_refresh_token(client: TestClient) -> None:
    session = await register(client)
    resp = await client.post(f"{R}/logout", json={"refresh_token": session["refresh_token"]}, headers=bearer(session))
    assert resp.status == 204
    assert (await client.post(f"{R}/refresh", json={"refresh_token": session["refresh_token"]})).status == 401


async def test_logout_of_another_users_token_changes_nothing(client: TestClient) -> None:
    alice = await register(client)
    bob = await register(client)
    resp = await client.post(f"{R}/logout", json={"refresh_token": alice["refresh_token"]}, headers=bearer(bob))
    assert resp.status == 204
    assert (await client.post(f"{R}/refresh", json={"refresh_token": alice["refresh_token"]})).status == 200


async def test_logout_all_ends_every_session(client: TestClient) -> None:
    email = unique_email()
    one = await register(client, email)
    two = await (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).json()
    resp = await client.post(f"{R}/logout-all", headers=bearer(one))
    assert resp.status == 204
    for session in (one, two):
        assert (await client.post(f"{R}/refresh", json={"refresh_token": session["refresh_token"]})).status == 401
        me = await client.get(f"{R}/me", headers=bearer(session))
        assert me.status == 401
        assert (await me.json())["error"]["code"] == "session_ended"
    fresh = await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})
    assert fresh.status == 200
    assert (await client.get(f"{R}/me", headers=bearer(await fresh.json()))).status == 200


async def test_me_requires_a_valid_token(client: TestClient) -> None:
    assert (await client.get(f"{R}/me")).status == 401
    assert (await client.get(f"{R}/me", headers={"Authorization": "Bearer forged.token.here"})).status == 401
    assert (await client.get(f"{R}/me", headers={"Authorization": "Basic abc"})).status == 401
    session = await register(client)
    forged = jwt.encode(
        {"sub": session["user"]["id"], "sv": 0, "iat": 1, "exp": 2**40, "iss": "parlor", "typ": "access"},
        "another-secret-another-secret-another-secret",
        algorithm="HS256",
    )
    resp = await client.get(f"{R}/me", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_token"


async def test_profile_update_and_timezone_validation(client: TestClient) -> None:
    session = await register(client)
    resp = await client.patch(
        f"{R}/me", json={"display_name": "Zed", "timezone": "Europe/Paris"}, headers=bearer(session)
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["display_name"] == "Zed" and body["timezone"] == "Europe/Paris"
    bad = await client.patch(f"{R}/me", json={"timezone": "Mars/Olympus"}, headers=bearer(session))
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "timezone"
    extra = await client.patch(f"{R}/me", json={"role": "admin"}, headers=bearer(session))
    assert extra.status == 422
    me = await (await client.get(f"{R}/me", headers=bearer(session))).json()
    assert me["role"] == "user" and me["timezone"] == "Europe/Paris"


async def test_password_change_ends_other_sessions(client: TestClient) -> None:
    email = unique_email()
    one = await register(client, email)
    two = await (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).json()
    wrong = await client.post(
        f"{R}/password", json={"current_password": "nope-nope", "new_password": "new password 1"}, headers=bearer(one)
    )
    assert wrong.status == 401
    resp = await client.post(
        f"{R}/password", json={"current_password": PASSWORD, "new_password": "new password 1"}, headers=bearer(one)
    )
    assert resp.status == 200
    fresh = await resp.json()
    assert (await client.get(f"{R}/me", headers=bearer(two))).status == 401
    assert (await client.get(f"{R}/me", headers=bearer(fresh))).status == 200
    assert (await client.post(f"{R}/login", json={"email": email, "password": PASSWORD})).status == 401
    assert (await client.post(f"{R}/login", json={"email": email, "password": "new password 1"})).status == 200


async def test_error_shape_for_unknown_route_and_method(client: TestClient) -> None:
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.delete(f"{R}/login")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
