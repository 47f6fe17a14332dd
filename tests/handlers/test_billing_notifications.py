"""Billing as a source of notifications (docs/push.md): a Stripe or Google Play subscription renewed, in
grace after a failed payment, or ended (a webhook, a verify, the scheduler's expiry) stores one
`subscription` notification, and a Stripe credit pack one `credits` notification — once per change applied:
a replayed webhook, the same state in another event, a repeated verify or a second job run add none.
`in_app` off stores none while the change still applies; a notification that fails never fails the change.
The real stripe SDK and the Play client run against the local fakes, as in test_billing / test_google_play."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from core.entities import Notification
from handlers.keys import BILLING_SETTINGS, NOTIFICATION_SERVICE, SUBSCRIPTION_SERVICE
from server.app import create_app
from server.billing_wiring import SCHEDULER, billing_context
from server.config import Settings
from services.notifications import NotificationService
from tests.fakes.google_play import ACCESS_TOKEN, PACKAGE, FakePlay, Purchase
from tests.fakes.stripe import API_KEY, WEBHOOK_SECRET, FakeStripe, event
from tests.handlers.test_billing import (
    billing_settings,
    buy_pack,
    deliver_ok,
    ledger_of,
    plan_of,
    subscribe,
    subscriptions_of,
)
from tests.helpers import Inbox, bearer, connect_socket, register, wait_until

N = "/api/v1/notifications"
MONTHLY = "premium_monthly"


def make_app(settings: Settings, fake_stripe: FakeStripe, fake_play: FakePlay) -> web.Application:
    """Stripe and Google Play both on, against the fakes; the scheduler only runs when a test runs it."""
    update = {
        "stripe_secret_key": SecretStr(API_KEY),
        "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "stripe_api_base": fake_stripe.url,
    }
    app = create_app(settings.model_copy(update=update))
    app[BILLING_SETTINGS] = billing_settings(
        play_package_name=PACKAGE,
        play_products=f"{MONTHLY}:monthly,premium_yearly:yearly",
        play_api_base=fake_play.url,
        play_access_token=ACCESS_TOKEN,
        billing_grace_days=3,
    )
    return app


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, fake_stripe: FakeStripe, fake_play: FakePlay) -> TestClient:
    return await aiohttp_client(make_app(settings, fake_stripe, fake_play))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


async def notified(client: TestClient, user: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The `data` of the user's notifications of `kind`, oldest first, read as the app reads them."""
    resp = await client.get(N, params={"limit": "50"}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    items = (await resp.json())["items"]
    return [item["data"] for item in reversed(items) if item["kind"] == kind]


async def titles(client: TestClient, user: dict[str, Any]) -> list[tuple[str, str]]:
    items = (await (await client.get(N, headers=bearer(user))).json())["items"]
    return [(item["title"], item["body"]) for item in reversed(items)]


def token() -> str:
    return f"opaque.{uuid.uuid4().hex}-{uuid.uuid4().hex[:8]}_AO-J1Oz"


async def verify(client: TestClient, user: dict[str, Any], purchase_token: str, product: str = MONTHLY) -> Any:
    body = {"product_id": product, "purchase_token": purchase_token}
    return await client.post("/api/v1/subscription/verify", json=body, headers=bearer(user))


async def row_of(db: asyncpg.Connection, purchase_token: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT status, grace_until FROM subscriptions WHERE provider = 'google_play' AND external_id = $1",
        purchase_token,
    )
    assert row is not None
    return dict(row)


async def run_expiry_job(client: TestClient) -> dict[str, Any]:
    outcome = await client.app[SCHEDULER].run("subscriptions", datetime.now(UTC))  # a slot of its own
    assert outcome.ran and outcome.result is not None
    return outcome.result


def iso(at: datetime | int) -> str:
    value = datetime.fromtimestamp(at, UTC) if isinstance(at, int) else at
    return value.isoformat().replace("+00:00", "Z")


def stripe_sub(fake: FakeStripe, sub_id: str, **changes: Any) -> dict[str, Any]:
    """A copy of the fake's subscription as an event carries it; `period_end` moves the item's period."""
    sub: dict[str, Any] = json.loads(json.dumps(fake.subscriptions[sub_id]))
    period_end = changes.pop("period_end", None)
    if period_end is not None:
        sub["items"]["data"][0]["current_period_end"] = period_end
    return {**sub, **changes}


async def stripe_premium(client: TestClient, fake: FakeStripe, user: dict[str, Any]) -> tuple[str, int]:
    """A paid Stripe subscription, its webhooks applied: the subscription id and its period end."""
    sub_id, completed, created = await subscribe(client, fake, user)
    await deliver_ok(client, completed)
    await deliver_ok(client, created)
    return sub_id, int(fake.subscriptions[sub_id]["items"]["data"][0]["current_period_end"])


async def test_a_stripe_renewal_notifies_once(client: TestClient, fake_stripe: FakeStripe, sockets: list[Any]) -> None:
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "notification")
    sub_id, period_end = await stripe_premium(client, fake_stripe, user)
    assert await notified(client, user, "subscription") == [], "subscribing is not a renewal"

    now = int(time.time())
    renewed_end = period_end + 30 * 86400
    renewed = event(
        "customer.subscription.updated", stripe_sub(fake_stripe, sub_id, period_end=renewed_end), created=now + 1
    )
    await asyncio.gather(*(deliver_ok(client, renewed) for _ in range(3)))  # Stripe's retries: one event id
    # The same state again in another event, and the renewal's invoice: nothing new happened.
    await deliver_ok(
        client,
        event(
            "customer.subscription.updated", stripe_sub(fake_stripe, sub_id, period_end=renewed_end), created=now + 2
        ),
    )
    await deliver_ok(client, event("invoice.paid", fake_stripe.invoice(sub_id), created=now + 2))
    # An older event arriving late (cancel flag on the first period) stores nothing.
    await deliver_ok(
        client,
        event("customer.subscription.updated", stripe_sub(fake_stripe, sub_id, cancel_at_period_end=True), created=now),
    )

    expected = {"event": "renewed", "plan": "premium", "period_end": iso(renewed_end)}
    assert await notified(client, user, "subscription") == [expected]
    [(title, body)] = await titles(client, user)
    assert title == "Premium renewed" and body.startswith("Paid until ")
    await wait_until(lambda: bool(inbox["notification"]))
    await asyncio.sleep(0.2)
    [live] = inbox["notification"]
    assert live["notification"]["kind"] == "subscription" and live["notification"]["data"] == expected


async def test_stripe_past_due_recovery_and_deletion_notify_once_each(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    sub_id, period_end = await stripe_premium(client, fake_stripe, user)
    now = int(time.time())
    # Stripe moves the period on when the renewal is billed; the payment fails: past_due, still premium.
    next_end = period_end + 30 * 86400
    failing = event(
        "customer.subscription.updated",
        stripe_sub(fake_stripe, sub_id, status="past_due", period_end=next_end),
        created=now + 1,
    )
    await deliver_ok(client, failing)
    await deliver_ok(client, failing)
    # `unpaid` is past_due here too: no second "payment problem".
    unpaid = stripe_sub(fake_stripe, sub_id, status="unpaid", period_end=next_end)
    await deliver_ok(client, event("customer.subscription.updated", unpaid, created=now + 2))
    assert await plan_of(db, user) == "premium"
    # A retry goes through: active on the same period.
    paid = stripe_sub(fake_stripe, sub_id, status="active", period_end=next_end)
    await deliver_ok(client, event("customer.subscription.updated", paid, created=now + 3))
    # Later the subscription ends; Stripe retries the deletion.
    gone = event(
        "customer.subscription.deleted",
        stripe_sub(fake_stripe, sub_id, status="canceled", period_end=next_end),
        created=now + 4,
    )
    await deliver_ok(client, gone)
    await deliver_ok(client, gone)
    assert await plan_of(db, user) == "free"

    assert await notified(client, user, "subscription") == [
        {"event": "grace", "plan": "premium"},  # Stripe retries on its own schedule: no date to promise
        {"event": "renewed", "plan": "premium", "period_end": iso(next_end)},
        {"event": "expired", "plan": "premium", "period_end": iso(next_end)},
    ]
    assert [title for title, _ in await titles(client, user)] == ["Payment problem", "Premium renewed", "Premium ended"]


async def test_a_credit_pack_notifies_once(client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection) -> None:
    user = await register(client)
    session = await buy_pack(client, user, "starter")
    completed = fake_stripe.complete_checkout(session["id"])
    body = event("checkout.session.completed", completed)
    await asyncio.gather(*(deliver_ok(client, body) for _ in range(5)))
    # The same payment announced again by another event type finds the ledger entry: nothing new.
    await deliver_ok(client, event("checkout.session.async_payment_succeeded", completed))
    assert (await ledger_of(db, user))[0] == 50
    assert await notified(client, user, "credits") == [
        {"event": "pack", "pack": "starter", "amount": 50, "balance": 50}
    ]
    assert await titles(client, user) == [("50 credits added", "Your balance is now 50 credits.")]
    # A second purchase is a second delivery, with the balance after it.
    pro = fake_stripe.complete_checkout((await buy_pack(client, user, "pro"))["id"])
    await deliver_ok(client, event("checkout.session.completed", pro))
    assert (await notified(client, user, "credits"))[-1] == {
        "event": "pack",
        "pack": "pro",
        "amount": 1000,
        "balance": 1050,
    }
    assert await notified(client, user, "subscription") == []


async def test_play_renewal_grace_and_expiry_notify_once_each(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    purchase_token = token()
    first_end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    purchase = fake_play.add(purchase_token, Purchase(MONTHLY, expiry=first_end))
    for _ in range(2):
        assert (await verify(client, user, purchase_token)).status == 200
    assert await notified(client, user, "subscription") == [], "a purchase is not a renewal"

    # Renewed: the app verifies again after Play renewed it (and again, as apps do).
    renewed_end = first_end + timedelta(days=30)
    purchase.expiry = renewed_end
    for _ in range(2):
        assert (await verify(client, user, purchase_token)).status == 200
    await run_expiry_job(client)  # nothing is due

    # The next renewal fails: the period ended an hour ago and Google puts the purchase on hold.
    lapsed = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    purchase.expiry, purchase.state = lapsed, "SUBSCRIPTION_STATE_ON_HOLD"
    await db.execute("UPDATE subscriptions SET current_period_end = $2 WHERE external_id = $1", purchase_token, lapsed)
    assert (await run_expiry_job(client))["in_grace"] >= 1
    await run_expiry_job(client)  # still in grace: no change
    assert (await verify(client, user, purchase_token)).status == 200  # Play still says on hold
    assert (await row_of(db, purchase_token))["status"] == "in_grace" and await plan_of(db, user) == "premium"

    # Four days on, still not renewed: the grace period is over.
    long_ago = lapsed - timedelta(days=4)
    purchase.expiry = long_ago
    await db.execute(
        "UPDATE subscriptions SET current_period_end = $2, grace_until = $3 WHERE external_id = $1",
        purchase_token,
        long_ago,
        long_ago + timedelta(days=3),
    )
    assert (await run_expiry_job(client))["expired"] >= 1
    await run_expiry_job(client)
    assert await plan_of(db, user) == "free"

    assert await notified(client, user, "subscription") == [
        {"event": "renewed", "plan": "premium", "period_end": iso(renewed_end)},
        {"event": "grace", "plan": "premium", "grace_until": iso(lapsed + timedelta(days=3))},
        {"event": "expired", "plan": "premium", "period_end": iso(long_ago)},
    ]
    texts = await titles(client, user)
    assert [title for title, _ in texts] == ["Premium renewed", "Payment problem", "Premium ended"]
    grace_until = lapsed + timedelta(days=3)
    assert (
        texts[1][1]
        == f"Premium continues until {grace_until.day} {grace_until:%B %Y}. Please check your payment method."
    )
    assert texts[2][1] == "You are on the free plan now."


async def test_an_ended_subscription_another_one_replaces_notifies_nothing(
    client: TestClient, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    """A Play upgrade ends the old token while the new one keeps premium: no "Premium ended"."""
    user = await register(client)
    old, new = token(), token()
    fake_play.add(old, Purchase(MONTHLY))
    assert (await verify(client, user, old)).status == 200
    fake_play.add(
        new, Purchase("premium_yearly", linked_purchase_token=old, expiry=datetime.now(UTC) + timedelta(days=365))
    )
    assert (await verify(client, user, new, "premium_yearly")).status == 200
    assert (await row_of(db, old))["status"] == "expired" and await plan_of(db, user) == "premium"
    assert await notified(client, user, "subscription") == []


async def test_an_admin_grant_ending_notifies_but_its_extension_is_no_renewal(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """The scheduler's expiry of a grant, like any subscription's, ends premium: "Premium ended". A grant
    moved on by an admin is not a paid renewal; an admin ending it ends premium too."""
    user = await register(client)
    user_id = UUID(user["user"]["id"])
    subscriptions = client.app[SUBSCRIPTION_SERVICE]
    await subscriptions.set_admin_plan(user_id, plan="premium", until=datetime.now(UTC) + timedelta(hours=1))
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    await db.execute("UPDATE subscriptions SET current_period_end = $2 WHERE user_id = $1", user_id, ended)
    assert (await run_expiry_job(client))["expired"] >= 1
    await run_expiry_job(client)
    assert await plan_of(db, user) == "free"
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    await subscriptions.set_admin_plan(user_id, plan="premium", until=until)
    await subscriptions.set_admin_plan(user_id, plan="premium", until=until + timedelta(days=30))
    await subscriptions.set_admin_plan(user_id, plan="free")
    assert await notified(client, user, "subscription") == [
        {"event": "expired", "plan": "premium", "period_end": iso(ended)},
        {"event": "expired", "plan": "premium"},  # ended by hand: the grant stores no period end then
    ]


async def test_with_in_app_off_nothing_is_stored_and_billing_still_applies(
    client: TestClient, fake_stripe: FakeStripe, fake_play: FakePlay, db: asyncpg.Connection
) -> None:
    user = await register(client)
    resp = await client.patch(
        f"{N}/preferences", json={"kinds": {"subscription": {"in_app": False}}}, headers=bearer(user)
    )
    assert resp.status == 200, await resp.text()
    sub_id, period_end = await stripe_premium(client, fake_stripe, user)
    now = int(time.time())
    renewed = stripe_sub(fake_stripe, sub_id, period_end=period_end + 86400)
    await deliver_ok(client, event("customer.subscription.updated", renewed, created=now + 1))
    gone = stripe_sub(fake_stripe, sub_id, status="canceled", period_end=period_end + 86400)
    await deliver_ok(client, event("customer.subscription.deleted", gone, created=now + 2))
    assert [s["status"] for s in await subscriptions_of(db, user)] == ["canceled"]
    assert await plan_of(db, user) == "free"
    # Google Play too: in grace (Play says so at once), still premium.
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY, state="SUBSCRIPTION_STATE_IN_GRACE_PERIOD"))
    assert (await verify(client, user, purchase_token)).status == 200
    assert await plan_of(db, user) == "premium"
    assert await notified(client, user, "subscription") == []
    # Only the kind turned off: a credit pack still notifies.
    pack = fake_stripe.complete_checkout((await buy_pack(client, user))["id"])
    await deliver_ok(client, event("checkout.session.completed", pack))
    assert [data["event"] for data in await notified(client, user, "credits")] == ["pack"]


class FailingNotifications(NotificationService):
    """A NotificationService whose notify fails, as when its table is out of reach (or with a bug). Built
    without the real service's parts: billing only ever calls notify."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.kinds: list[str] = []

    async def notify(
        self, user_id: UUID, kind: str, title: str, body: str, data: Mapping[str, Any] | None = None
    ) -> Notification | None:
        self.kinds.append(kind)
        raise self.error


@pytest.mark.parametrize("error", [ConnectionResetError("notifications unreachable"), RuntimeError("a bug")])
async def test_a_failing_notification_never_fails_the_billing_change(
    aiohttp_client: Any,
    settings: Settings,
    fake_stripe: FakeStripe,
    fake_play: FakePlay,
    db: asyncpg.Connection,
    sockets: list[Any],
    error: Exception,
) -> None:
    failing = FailingNotifications(error)
    app = make_app(settings, fake_stripe, fake_play)

    async def swap_notifications(app: web.Application) -> AsyncIterator[None]:
        app[NOTIFICATION_SERVICE] = failing  # before billing_context builds the billing services with it
        yield

    app.cleanup_ctx.insert(app.cleanup_ctx.index(billing_context), swap_notifications)
    client = await aiohttp_client(app)
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "credits", "plan")

    pack = fake_stripe.complete_checkout((await buy_pack(client, user))["id"])
    body = event("checkout.session.completed", pack)
    assert await deliver_ok(client, body) == {"received": True, "duplicate": False}
    assert (await deliver_ok(client, body))["duplicate"] is True, "recorded as applied, not rolled back"
    sub_id, _ = await stripe_premium(client, fake_stripe, user)
    gone = event(
        "customer.subscription.deleted",
        stripe_sub(fake_stripe, sub_id, status="canceled"),
        created=int(time.time()) + 1,
    )
    assert (await deliver_ok(client, gone))["duplicate"] is False
    purchase_token = token()
    fake_play.add(purchase_token, Purchase(MONTHLY, state="SUBSCRIPTION_STATE_IN_GRACE_PERIOD"))
    assert (await verify(client, user, purchase_token)).status == 200

    assert (await ledger_of(db, user))[0] == 50
    assert [s["status"] for s in await subscriptions_of(db, user)] == ["canceled", "in_grace"]
    assert await plan_of(db, user) == "premium"
    assert failing.kinds == ["credits", "subscription", "subscription"], "each was tried once, after its commit"
    # The events sent after commit before the notification still went out.
    await wait_until(lambda: len(inbox["plan"]) == 3)
    assert inbox["credits"] == [{"balance": 50}]
    assert inbox["plan"] == [{"plan": "premium"}, {"plan": "free"}, {"plan": "premium"}]
