"""Quota and credits on every AI message (issue 5, checks 1, 2, 3 and 7)."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import Inbox, bearer, connect_socket, make_admin, make_chat, register


@pytest.fixture
async def quota_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    update = {
        "free_daily_messages": 10,
        "ai_provider": "gemini",
        "gemini_api_key": SecretStr("k"),
        "gemini_base_url": gemini.url,
        "ai_max_attempts": 1,
    }
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


async def grant(client: TestClient, admin: dict[str, Any], user: dict[str, Any], amount: int) -> dict[str, Any]:
    resp = await client.post(
        f"/api/v1/admin/users/{user['user']['id']}/credits",
        json={"amount": amount, "idempotency_key": str(uuid.uuid4())},
        headers=bearer(admin),
    )
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


def msg(chat: dict[str, Any], content: str = "hi") -> dict[str, Any]:
    return {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": content}


def rest_msg(content: str = "hi") -> dict[str, Any]:
    return {"client_id": str(uuid.uuid4()), "content": content}


async def test_eleventh_message_refused_then_credits_then_refused(
    quota_client: TestClient, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = quota_client
    admin = await make_admin(client, settings.database_url)
    user = await register(client)
    chat = await make_chat(client, user)
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, "quota", "credits", "ai:done")
    await connect_socket(client, user["access_token"], sio=sio)
    sockets.append(sio)

    for i in range(10):
        ack = await sio.call("message:send", msg(chat, f"m{i}"))
        assert ack["ok"], ack
    calls_before = len(gemini.calls)
    refused = await sio.call("message:send", msg(chat, "eleventh"))
    assert refused["ok"] is False and refused["error"]["code"] == "quota_exceeded"
    rest = await client.post(f"/api/v1/chat/sessions/{chat['id']}/messages", json=rest_msg(), headers=bearer(user))
    assert rest.status == 402 and (await rest.json())["error"]["code"] == "quota_exceeded"
    await asyncio.sleep(0.5)
    # The refused messages reached no provider and were not stored.
    history = await (
        await client.get(f"/api/v1/chat/sessions/{chat['id']}/messages?limit=200", headers=bearer(user))
    ).json()
    assert "eleventh" not in [m["content"] for m in history["items"]]
    assert all("eleventh" not in str(c.body) for c in gemini.calls[calls_before:])
    assert inbox["quota"][-1]["remaining"] == 0

    await grant(client, admin, user, 3)
    for i in range(3):
        ack = await sio.call("message:send", msg(chat, f"paid {i}"))
        assert ack["ok"], ack
    again = await sio.call("message:send", msg(chat, "no more"))
    assert again["error"]["code"] == "quota_exceeded"
    balance = await (await client.get("/api/v1/credits/balance", headers=bearer(user))).json()
    assert balance == {"balance": 0}
    await asyncio.sleep(0.3)
    assert inbox["credits"][-1] == {"balance": 0}
    current = await (await client.get("/api/v1/usage/current", headers=bearer(user))).json()
    assert current["used_today"] == 10 and current["credit_messages_today"] == 3 and current["remaining"] == 0
    assert current["daily_limit"] == 10 and current["credits"] == 0 and current["plan"] == "free"


async def test_50_concurrent_sends_with_10_credits(
    quota_client: TestClient, settings: Settings, sockets: list[Any]
) -> None:
    client = quota_client
    admin = await make_admin(client, settings.database_url)
    user = await register(client)
    chat = await make_chat(client, user)
    conn = await asyncpg.connect(settings.database_url)
    # Today's quota already used up.
    await conn.execute(
        "INSERT INTO usage_daily (user_id, day, messages) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 10)",
        uuid.UUID(user["user"]["id"]),
    )
    await grant(client, admin, user, 10)
    devices = [await connect_socket(client, user["access_token"]) for _ in range(5)]
    sockets.extend(devices)
    acks = await asyncio.gather(
        *(devices[i % 5].call("message:send", msg(chat, f"c{i}"), timeout=30) for i in range(50))
    )
    assert sum(1 for a in acks if a["ok"]) == 10
    assert {a["error"]["code"] for a in acks if not a["ok"]} == {"quota_exceeded"}
    uid = uuid.UUID(user["user"]["id"])
    balance = await conn.fetchval("SELECT credit_balance FROM users WHERE id = $1", uid)
    ledger_sum = await conn.fetchval("SELECT sum(delta) FROM credit_ledger WHERE user_id = $1", uid)
    await conn.close()
    assert balance == 0 and ledger_sum == 0


async def test_provider_failure_gives_back_what_was_spent(
    quota_client: TestClient, settings: Settings, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = quota_client
    admin = await make_admin(client, settings.database_url)
    user = await register(client)
    chat = await make_chat(client, user)
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, "ai:error", "ai:done", "quota", "credits")
    await connect_socket(client, user["access_token"], sio=sio)
    sockets.append(sio)
    await sio.call("chat:join", {"session_id": chat["id"]})

    # A quota message whose reply fails: the day's count goes back down.
    gemini.then(Behaviour(status=500))
    assert (await sio.call("message:send", msg(chat, "fails")))["ok"]
    for _ in range(200):
        if inbox["ai:error"]:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    current = await (await client.get("/api/v1/usage/current", headers=bearer(user))).json()
    assert current["used_today"] == 0 and current["remaining"] == 10
    assert inbox["quota"][-1]["remaining"] == 10

    # A credit message whose reply fails: the credit comes back, once.
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute("UPDATE usage_daily SET messages = 10 WHERE user_id = $1", uuid.UUID(user["user"]["id"]))
    await conn.close()
    await grant(client, admin, user, 1)
    gemini.then(Behaviour(status=500))
    assert (await sio.call("message:send", msg(chat, "fails again")))["ok"]
    for _ in range(200):
        if len(inbox["ai:error"]) == 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert (await (await client.get("/api/v1/credits/balance", headers=bearer(user))).json()) == {"balance": 1}
    ledger = await (await client.get("/api/v1/credits/ledger", headers=bearer(user))).json()
    assert [e["reason"] for e in ledger["items"]] == ["refund", "message", "admin_grant"]
    assert sum(e["delta"] for e in ledger["items"]) == ledger["items"][0]["balance_after"] == 1


async def test_stop_before_first_token_refunds(
    quota_client: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    client = quota_client
    user = await register(client)
    chat = await make_chat(client, user)
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, "ai:start", "ai:done", "quota")
    await connect_socket(client, user["access_token"], sio=sio)
    sockets.append(sio)
    await sio.call("chat:join", {"session_id": chat["id"]})

    async def usage() -> tuple[int, int]:
        current = await (await client.get("/api/v1/usage/current", headers=bearer(user))).json()
        return current["used_today"], current["remaining"]

    assert await usage() == (0, 10)
    gemini.then(Behaviour(tokens=["late"], delay=3.0))
    ack = await sio.call("message:send", msg(chat, "stop me"))
    assert ack["ok"], ack
    # Charged first: the ack comes after the commit that used one of today's 10 messages.
    assert await usage() == (1, 9)
    for _ in range(200):
        if inbox["ai:start"]:
            break
        await asyncio.sleep(0.02)
    stop = await sio.call("ai:stop", {"stream_id": inbox["ai:start"][0]["stream_id"]})
    assert stop["ok"], stop
    for _ in range(200):
        if inbox["ai:done"] and len(inbox["quota"]) == 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    # Stopped before any token: nothing was generated, and the charge came back.
    reply = inbox["ai:done"][0]["message"]
    assert reply["status"] == "stopped" and reply["content"] == ""
    assert await usage() == (0, 10)
    assert [q["remaining"] for q in inbox["quota"]] == [9, 10]


async def test_quota_day_follows_the_users_time_zone(quota_client: TestClient) -> None:
    user = await register(quota_client)
    await quota_client.patch("/api/v1/auth/me", json={"timezone": "Pacific/Kiritimati"}, headers=bearer(user))
    current = await (await quota_client.get("/api/v1/usage/current", headers=bearer(user))).json()
    # UTC+14: the user's midnight is 14 hours before UTC midnight.
    assert current["resets_at"].endswith("T10:00:00Z")


async def test_usage_export_csv_and_json_agree(quota_client: TestClient) -> None:
    client = quota_client
    user = await register(client)
    chat = await make_chat(client, user)
    for i in range(4):
        resp = await client.post(
            f"/api/v1/chat/sessions/{chat['id']}/messages", json=rest_msg(f"u{i}"), headers=bearer(user)
        )
        assert resp.status == 201
    csv_resp = await client.post("/api/v1/usage/export", json={"format": "csv"}, headers=bearer(user))
    assert csv_resp.status == 200 and csv_resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await csv_resp.text())))
    json_resp = await client.post("/api/v1/usage/export", json={"format": "json"}, headers=bearer(user))
    days = (await json_resp.json())["days"]
    assert len(rows) == len(days) == 1
    assert {k: str(v) for k, v in days[0].items()} == rows[0]
    assert int(rows[0]["messages"]) == 4
    history = await (await client.get("/api/v1/usage/history?days=7", headers=bearer(user))).json()
    assert history["items"][0]["messages"] == 4
    analytics = await (await client.get("/api/v1/usage/analytics?days=30", headers=bearer(user))).json()
    assert analytics["total_messages"] == 4 and analytics["trend"]["last_7_days"] == 4
    assert sum(h["messages"] for h in analytics["peak_hours"]) == 4
    bad = await client.post("/api/v1/usage/export", json={"format": "xml"}, headers=bearer(user))
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "format"


async def test_admin_grant_is_idempotent_and_admin_only(quota_client: TestClient, settings: Settings) -> None:
    admin = await make_admin(quota_client, settings.database_url)
    user = await register(quota_client)
    url = f"/api/v1/admin/users/{user['user']['id']}/credits"
    body = {"amount": 5, "idempotency_key": "grant-1"}
    first = await (await quota_client.post(url, json=body, headers=bearer(admin))).json()
    second = await (await quota_client.post(url, json=body, headers=bearer(admin))).json()
    assert first == {"balance": 5, "applied": True} and second == {"balance": 5, "applied": False}
    assert (await quota_client.post(url, json=body, headers=bearer(user))).status == 403
    too_much = await quota_client.post(url, json={"amount": -6, "idempotency_key": "take"}, headers=bearer(admin))
    assert too_much.status == 402
    concurrent = await asyncio.gather(
        *(
            quota_client.post(url, json={"amount": 1, "idempotency_key": "same"}, headers=bearer(admin))
            for _ in range(10)
        )
    )
    results = [await r.json() for r in concurrent]
    assert sum(1 for r in results if r["applied"]) == 1
    assert (await (await quota_client.get("/api/v1/credits/balance", headers=bearer(user))).json())["balance"] == 6
