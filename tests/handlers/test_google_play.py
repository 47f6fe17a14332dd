"""Google Play subscriptions against a local fake of the Play Developer API (issue 5, check 5): verify
and acknowledge a purchase, premium until its expiry, a 3-day grace period after a failed renewal, then
back to free — moved along by the scheduler's subscription job, triggered here with explicit slots."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import BILLING_SETTINGS
from server.app import create_app
from server.billing_wiring import SCHEDULER
from server.config import Settings
from services.billing.config import BillingSettings
from tests.fakes.google_play import ACCESS_TOKEN, PACKAGE, FakePlay, Purchase
from tests.helpers import Inbox, bearer, connect_socket, register

S = "/api/v1/subscription"
MONTHLY = "premium_monthly"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, fake_play: FakePlay) -> TestClient:
    app = create_app(settings)
    app[BILLING_SETTINGS] = BillingSettings(
        _env_file=None,  # type: ignore[call-arg]
        play_package_name=PACKAGE,
        play_products=f"{MONTHLY}:monthly,premium_yearly:yearly",  # type: ignore[call-arg]
        play_api_base=fake_play.url,
        play_access_token=ACCESS_TOKEN,
        billing_grace_days=3,
        scheduler_enabled=False,
    )
    return await aiohttp_client(app)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


def token() -> str:
    # Real tokens are long opaque strings with dots and dashes.
    return f"opaque.{uuid.uuid4().hex}-{uuid.uuid4().hex[:8]}_AO-J1Oz"


async def verify(client: TestClient, user: dict[str, Any], purchase_token: str, product: str = MONTHLY) -> Any:
    return await client.post(
        f"{S}/verify", json={"product_id": product, "purchase_token": purchase_token}, headers=bearer(user)
    )


async def plan_of(db: asyncpg.Connection, user: dict[str, Any]) -> str:
    return str(await db.fetchval("SELECT plan FROM users WHERE id = $1", uuid.UUID(user["user"]["id"])))


async def row_of(db: asyncpg.Connection, purchase_token: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT status, current_period_end, grace_until, cancel_at_period_end FROM subscriptions"
        " WHERE provider = 'google_play' AND external_id = $1",
        purchase_token,
    )
    assert row is not None
    return dict(row)


async def run_expiry_job(client: TestClient) -> dict[str, Any]:
    # A slot of its own (microseconds): the claim in job_runs is per slot.
    outcome = await client.app[SCHEDULER].run("subscriptions", datetime.now(UTC))
    assert outcome.ran and outcome.result is not None
    return outcome.result


async def test_verified_purchase_is_premium_until_expiry_and_acknowledged(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection, sockets: list[Any]
) -> None:
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "plan")
    purchase_token = token()
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    fake_play.add(purchase_token, Purchase(MONTHLY, expiry=expiry))
    resp = await verify(client, user, purchase_token)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["provider"] == "google_play" and body["status"] == "active" and body["period"] == "monthly"
    assert body["current_period_end"] == expiry.isoformat().replace("+00:00", "Z")
    assert body["cancel_at_period_end"] is False
    assert await plan_of(db, user) == "premium"
    assert fake_play.acknowledged == [(MONTHLY, purchase_token)]
    assert {c.authorization for c in fake_play.calls} == {f"Bearer {ACCESS_TOKEN}"}
    # Verifying again (the app retries) stores nothing new and acknowledges nothing new.
    assert (await verify(client, user, purchase_token)).status == 200
    assert fake_play.acknowledged == [(MONTHLY, purchase_token)]
    count = await db.fetchval("SELECT count(*) FROM subscriptions WHERE external_id = $1", purchase_token)
    assert count == 1
    # Before the expiry the job leaves it alone.
    await run_expiry_job(client)
    assert (await row_of(db, purchase_token))["status"] == "active"
    status = await (await client.get(f"{S}/status", headers=bearer(user))).json()
    assert status["plan"] == "premium" and [s["provider"] for s in status["subscriptions"]] == ["google_play"]
    await asyncio.sleep(0.3)
    assert inbox["plan"] == [{"plan": "premium"}]


async def test_failed_renewal_keeps_premium_for_the_grace_period_then_free(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection, sockets: list[Any]
) -> None:
    user = await register(client)
    purchase_token = token()
    purchase = fake_play.add(purchase_token, Purchase(MONTHLY, expiry=datetime.now(UTC) + timedelta(hours=1)))
    assert (await verify(client, user, purchase_token)).status == 200
    assert await plan_of(db, user) == "premium"
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "plan")

    # The renewal fails: the period ended an hour ago and Google puts the purchase on hold.
    expired_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    purchase.expiry, purchase.state = expired_at, "SUBSCRIPTION_STATE_ON_HOLD"
    await db.execute(
        "UPDATE subscriptions SET current_period_end = $2 WHERE external_id = $1", purchase_token, expired_at
    )
    result = await run_expiry_job(client)
    assert result["in_grace"] >= 1
    row = await row_of(db, purchase_token)
    assert row["status"] == "in_grace" and row["grace_until"] == expired_at + timedelta(days=3)
    assert await plan_of(db, user) == "premium", "premium during the grace period"
    await run_expiry_job(client)  # still within the grace period: nothing changes
    assert (await row_of(db, purchase_token))["status"] == "in_grace"

    # Four days later, still not renewed: the grace period is over.
    long_ago = expired_at - timedelta(days=4)
    purchase.expiry = long_ago
    await db.execute(
        "UPDATE subscriptions SET current_period_end = $2, grace_until = $3 WHERE external_id = $1",
        purchase_token,
        long_ago,
        long_ago + timedelta(days=3),
    )
    result = await run_expiry_job(client)
    assert result["expired"] >= 1
    assert (await row_of(db, purchase_token))["status"] == "expired"
    assert await plan_of(db, user) == "free"
    await asyncio.sleep(0.3)
    assert inbox["plan"] == [{"plan": "free"}]


async def test_grace_without_google_goes_by_the_dates(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    """Google unreachable for this purchase (5xx): the stored expiry alone decides grace and expiry."""
    user = await register(client)
    purchase_token = token()
    purchase = fake_play.add(purchase_token, Purchase(MONTHLY, expiry=datetime.now(UTC) + timedelta(hours=1)))
    assert (await verify(client, user, purchase_token)).status == 200
    purchase.error_status = 503
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    await db.execute("UPDATE subscriptions SET current_period_end = $2 WHERE external_id = $1", purchase_token, ended)
    await run_expiry_job(client)
    row = await row_of(db, purchase_token)
    assert row["status"] == "in_grace" and row["grace_until"] == ended + timedelta(days=3)
    assert await plan_of(db, user) == "premium"
    await db.execute(
        "UPDATE subscriptions SET grace_until = now() - interval '1 minute' WHERE external_id = $1", purchase_token
    )
    await run_expiry_job(client)
    assert (await row_of(db, purchase_token))["status"] == "expired"
    assert await plan_of(db, user) == "free"


async def test_a_renewal_seen_by_the_job_keeps_premium(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    purchase_token = token()
    purchase = fake_play.add(purchase_token, Purchase(MONTHLY, expiry=datetime.now(UTC) + timedelta(hours=1)))
    assert (await verify(client, user, purchase_token)).status == 200
    renewed = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    purchase.expiry = renewed
    await db.execute(
        "UPDATE subscriptions SET current_period_end = now() - interval '1 minute' WHERE external_id = $1",
        purchase_token,
    )
    await run_expiry_job(client)
    row = await row_of(db, purchase_token)
    assert row["status"] == "active" and row["current_period_end"] == renewed and row["grace_until"] is None
    assert await plan_of(db, user) == "premium"


async def test_cancelled_in_the_store_lasts_until_expiry_without_grace(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    purchase_token = token()
    purchase = fake_play.add(
        purchase_token,
        Purchase(MONTHLY, state="SUBSCRIPTION_STATE_CANCELED", auto_renewing=False, acknowledged=True),
    )
    resp = await verify(client, user, purchase_token)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "active" and body["cancel_at_period_end"] is True
    assert fake_play.acknowledged == [], "already acknowledged"
    purchase.expiry = datetime.now(UTC) - timedelta(minutes=1)
    await db.execute(
        "UPDATE subscriptions SET current_period_end = $2 WHERE external_id = $1", purchase_token, purchase.expiry
    )
    await run_expiry_job(client)
    assert (await row_of(db, purchase_token))["status"] == "expired"
    assert await plan_of(db, user) == "free"


async def test_a_token_of_another_user_is_409(client: TestClient, fake_play: FakePlay, db: asyncpg.Connection) -> None:
    alice, bob = await register(client), await register(client)
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY))
    assert (await verify(client, alice, purchase_token)).status == 200
    resp = await verify(client, bob, purchase_token)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "purchase_token_in_use"
    assert await plan_of(db, alice) == "premium" and await plan_of(db, bob) == "free"


async def test_two_users_racing_for_one_token_one_wins(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    users = [await register(client) for _ in range(4)]
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY, acknowledged=True))
    answers = await asyncio.gather(*(verify(client, u, purchase_token) for u in users))
    assert sorted(a.status for a in answers) == [200, 409, 409, 409]
    plans = [await plan_of(db, u) for u in users]
    assert sorted(plans) == ["free", "free", "free", "premium"]


async def test_a_linked_purchase_replaces_the_old_one(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    old, new = token(), token()
    fake_play.add(old, Purchase(MONTHLY))
    assert (await verify(client, user, old)).status == 200
    fake_play.add(
        new, Purchase("premium_yearly", linked_purchase_token=old, expiry=datetime.now(UTC) + timedelta(days=365))
    )
    resp = await verify(client, user, new, "premium_yearly")
    assert resp.status == 200 and (await resp.json())["period"] == "yearly"
    assert (await row_of(db, old))["status"] == "expired"
    assert (await row_of(db, new))["status"] == "active"
    assert await plan_of(db, user) == "premium"
    history = await (await client.get(f"{S}/history", headers=bearer(user))).json()
    assert [(h["period"], h["status"]) for h in history["items"]] == [("yearly", "active"), ("monthly", "expired")]


@pytest.mark.parametrize(
    ("state", "status", "plan"),
    [
        ("SUBSCRIPTION_STATE_IN_GRACE_PERIOD", "in_grace", "premium"),
        ("SUBSCRIPTION_STATE_PAUSED", "paused", "free"),
        ("SUBSCRIPTION_STATE_PENDING", "incomplete", "free"),
        ("SUBSCRIPTION_STATE_EXPIRED", "expired", "free"),
    ],
)
async def test_play_states_map_to_ours(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection, state: str, status: str, plan: str
) -> None:
    user = await register(client)
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY, state=state))
    resp = await verify(client, user, purchase_token)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == status
    assert await plan_of(db, user) == plan
    acknowledged = state == "SUBSCRIPTION_STATE_IN_GRACE_PERIOD"
    assert fake_play.acknowledged == ([(MONTHLY, purchase_token)] if acknowledged else [])


async def test_bad_purchases_are_422_never_500(client: TestClient, fake_play: FakePlay) -> None:
    user = await register(client)
    purged = token()
    fake_play.add(purged, Purchase(MONTHLY, error_status=410))
    yearly = token()
    fake_play.add(yearly, Purchase("premium_yearly"))
    cases = [
        ("premium_weekly", token(), "unknown_product", "product_id"),
        (MONTHLY, "no-such-token", "invalid_purchase_token", "purchase_token"),
        (MONTHLY, purged, "invalid_purchase_token", "purchase_token"),
        (MONTHLY, yearly, "product_mismatch", "product_id"),
    ]
    for product, purchase_token, code, field in cases:
        resp = await verify(client, user, purchase_token, product)
        assert resp.status == 422, (product, code)
        error = (await resp.json())["error"]
        assert error["code"] == code and error["details"][0]["field"] == field
    resp = await client.post(f"{S}/verify", json={"product_id": MONTHLY}, headers=bearer(user))
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "purchase_token"
    assert fake_play.acknowledged == []


async def test_play_refusing_our_credentials_is_503(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY))
    fake_play.access_token = "rotated"
    resp = await verify(client, user, purchase_token)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "billing_unavailable"
    assert await plan_of(db, user) == "free"


async def test_plans_list_play_products(client: TestClient) -> None:
    body = await (await client.get(f"{S}/plans")).json()
    assert body["google_play_enabled"] is True and body["stripe_enabled"] is False
    assert body["google_play_products"] == [
        {"product_id": MONTHLY, "period": "monthly"},
        {"product_id": "premium_yearly", "period": "yearly"},
    ]
