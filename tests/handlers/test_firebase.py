"""Firebase sign-in and linking through the real firebase-admin SDK in Auth-emulator mode."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.fakes.firebase_tokens import PROJECT_ID, emulator_id_token
from tests.helpers import PASSWORD, bearer, free_port, register, unique_email

R = "/api/v1/auth"


@pytest.fixture
async def fb_client(aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    # Nothing listens there: verifying emulator tokens must not need the network.
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    fb_settings = settings.model_copy(update={"firebase_project_id": PROJECT_ID})
    return await aiohttp_client(create_app(fb_settings))


def uid() -> str:
    return uuid.uuid4().hex[:20]


async def test_new_google_user_gets_an_account_once(fb_client: TestClient) -> None:
    email, google_uid = unique_email("g"), uid()
    token = emulator_id_token(google_uid, email=email, name="Gina")
    first = await fb_client.post(f"{R}/firebase", json={"id_token": token})
    assert first.status == 200, await first.text()
    body = await first.json()
    assert body["created"] is True
    assert body["user"]["email"] == email and body["user"]["display_name"] == "Gina"
    assert body["user"]["firebase_linked"] is True and body["user"]["has_password"] is False
    again = await (await fb_client.post(f"{R}/firebase", json={"id_token": token})).json()
    assert again["created"] is False and again["user"]["id"] == body["user"]["id"]
    assert (await fb_client.get(f"{R}/me", headers=bearer(again))).status == 200


async def test_verified_google_email_links_existing_account(fb_client: TestClient) -> None:
    email = unique_email()
    account = await register(fb_client, email)
    resp = await fb_client.post(f"{R}/firebase", json={"id_token": emulator_id_token(uid(), email=email)})
    assert resp.status == 200
    body = await resp.json()
    assert body["created"] is False and body["user"]["id"] == account["user"]["id"]


async def test_unverified_google_email_does_not_take_over(fb_client: TestClient) -> None:
    email = unique_email()
    await register(fb_client, email)
    token = emulator_id_token(uid(), email=email, email_verified=False)
    resp = await fb_client.post(f"{R}/firebase", json={"id_token": token})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "account_exists"


@pytest.mark.parametrize(
    "token",
    [
        emulator_id_token("u-expired", email="e@example.com", expires_in=-60),
        emulator_id_token("u-aud", email="e@example.com", project_id="someone-else"),
        "not-a-jwt",
    ],
)
async def test_bad_firebase_tokens_are_401(fb_client: TestClient, token: str) -> None:
    resp = await fb_client.post(f"{R}/firebase", json={"id_token": token})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_token"


async def test_link_unlink_and_back(fb_client: TestClient) -> None:
    alice = await register(fb_client)
    google_uid = uid()
    token = emulator_id_token(google_uid, email=unique_email("other"))
    linked = await fb_client.post(f"{R}/link/firebase", json={"id_token": token}, headers=bearer(alice))
    assert linked.status == 200 and (await linked.json())["firebase_linked"] is True
    # The Google account now signs in as Alice.
    via_google = await (await fb_client.post(f"{R}/firebase", json={"id_token": token})).json()
    assert via_google["user"]["id"] == alice["user"]["id"]
    # Bob cannot link the same Google account.
    bob = await register(fb_client)
    taken = await fb_client.post(f"{R}/link/firebase", json={"id_token": token}, headers=bearer(bob))
    assert taken.status == 409
    unlinked = await fb_client.delete(f"{R}/link/firebase", headers=bearer(alice))
    assert unlinked.status == 200 and (await unlinked.json())["firebase_linked"] is False


async def test_google_only_user_sets_a_password_then_logs_in_by_email(fb_client: TestClient) -> None:
    email = unique_email("g")
    resp = await fb_client.post(f"{R}/firebase", json={"id_token": emulator_id_token(uid(), email=email)})
    session = await resp.json()
    refused = await fb_client.delete(f"{R}/link/firebase", headers=bearer(session))
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "no_password"
    set_pw = await fb_client.post(f"{R}/password", json={"new_password": PASSWORD}, headers=bearer(session))
    assert set_pw.status == 200
    login = await fb_client.post(f"{R}/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200


async def test_firebase_disabled_is_503(client: TestClient) -> None:
    resp = await client.post(f"{R}/firebase", json={"id_token": emulator_id_token(uid(), email=unique_email())})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "firebase_disabled"
