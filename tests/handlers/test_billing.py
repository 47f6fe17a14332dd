"""Stripe billing through the real stripe SDK against a local fake of Stripe's API (issue 5, check 4):
Checkout, the Customer Portal, cancelling, invoices, and the webhook applying each event exactly once,
in any order, only ever to the user who owns the Stripe customer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from handlers.keys import BILLING_SETTINGS
from server.app import create_app
from server.config import Settings
from services.billing.config import BillingSettings
from tests.fakes.stripe import API_KEY, WEBHOOK_SECRET, Failure, FakeStripe, event, sign
from tests.helpers import Inbox, bearer, connect_socket, register

S = "/api/v1/subscription"
WEBHOOK = "/api/v1/billing/webhook"
PACKS = "starter:50:499,pro:1000:5999"


def billing_settings(**overrides: Any) -> BillingSettings:
    values: dict[str, Any] = {"credit_packs": PACKS, "scheduler_enabled": False, **overrides}
    return BillingSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, fake_stripe: FakeStripe) -> TestClient:
    update = {
        "stripe_secret_key": SecretStr(API_KEY),
        "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "stripe_api_base": fake_stripe.url,
    }
    app = create_app(settings.model_copy(update=update))
    app[BILLING_SETTINGS] = billing_settings()
    return await aiohttp_client(app)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


def uid(session: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(session["user"]["id"])


async def deliver(client: TestClient, body: str, *, secret: str = WEBHOOK_SECRET) -> ClientResponse:
    return await client.post(WEBHOOK, data=body.encode(), headers={"Stripe-Signature": sign(body, secret)})


async def deliver_ok(client: TestClient, body: str) -> dict[str, Any]:
    resp = await deliver(client, body)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def plan_of(db: asyncpg.Connection, session: dict[str, Any]) -> str:
    return str(await db.fetchval("SELECT plan FROM users WHERE id = $1", uid(session)))


async def subscriptions_of(db: asyncpg.Connection, session: dict[str, Any]) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT provider, plan, period, status, current_period_end, grace_until, cancel_at_period_end"
        " FROM subscriptions WHERE user_id = $1 ORDER BY created_at",
        uid(session),
    )
    return [dict(r) for r in rows]


async def ledger_of(db: asyncpg.Connection, session: dict[str, Any]) -> tuple[int, list[tuple[int, str, str]]]:
    balance = int(await db.fetchval("SELECT credit_balance FROM users WHERE id = $1", uid(session)))
    rows = await db.fetch(
        "SELECT delta, reason, ref_type FROM credit_ledger WHERE user_id = $1 ORDER BY id", uid(session)
    )
    return balance, [(r["delta"], r["reason"], r["ref_type"]) for r in rows]


async def outcome_of(db: asyncpg.Connection, body: str) -> str | None:
    event_id = json.loads(body)["id"]
    value = await db.fetchval(
        "SELECT outcome FROM billing_events WHERE provider = 'stripe' AND event_id = $1", event_id
    )
    return str(value) if value is not None else None


async def start_checkout(client: TestClient, session: dict[str, Any], period: str = "monthly") -> dict[str, Any]:
    resp = await client.post(f"{S}/checkout", json={"plan": "premium", "period": period}, headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def buy_pack(client: TestClient, session: dict[str, Any], pack: str = "starter") -> dict[str, Any]:
    resp = await client.post("/api/v1/credits/checkout", json={"pack": pack}, headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def subscribe(client: TestClient, fake: FakeStripe, session: dict[str, Any]) -> tuple[str, str, str]:
    """Checkout and payment on Stripe's side; returns the subscription id and the two webhook bodies
    Stripe then sends."""
    checkout = await start_checkout(client, session)
    completed = fake.complete_checkout(checkout["id"])
    sub_id = completed["subscription"]
    now = int(time.time())
    return (
        sub_id,
        event("checkout.session.completed", completed, created=now),
        event("customer.subscription.created", fake.subscriptions[sub_id], created=now),
    )


async def test_checkout_sends_what_is_bought_and_reuses_the_customer(
    client: TestClient, fake_stripe: FakeStripe
) -> None:
    user = await register(client)
    user_id = user["user"]["id"]
    first = await start_checkout(client, user)
    again = await start_checkout(client, user)
    assert first["id"] == again["id"] and first["url"].startswith("https://checkout.stripe.com/")
    other = await client.post(
        f"{S}/checkout",
        json={"plan": "premium", "period": "yearly"},
        headers={**bearer(user), "Idempotency-Key": "click-1"},
    )
    assert other.status == 200
    assert (await other.json())["id"] != first["id"]

    customers = fake_stripe.requests_to("POST", "/v1/customers")
    assert len(customers) == 1, "one Stripe customer per user"
    assert customers[0].params["metadata"] == {"user_id": user_id}
    assert customers[0].idempotency_key == f"parlor:customer:{user_id}"
    sent = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert len(sent) == 3 and sent[1].replayed, "a double click gets the same session"
    params = sent[0].params
    assert params["mode"] == "subscription"
    assert params["customer"] == next(iter(fake_stripe.customers))
    assert params["client_reference_id"] == user_id
    assert params["metadata"] == {"user_id": user_id, "kind": "subscription", "plan": "premium", "period": "monthly"}
    assert params["subscription_data"]["metadata"]["user_id"] == user_id
    line = params["line_items"][0]
    assert line["quantity"] == "1"
    assert line["price_data"]["unit_amount"] == "999" and line["price_data"]["currency"] == "usd"
    assert line["price_data"]["recurring"] == {"interval": "month"}
    assert sent[2].params["line_items"][0]["price_data"]["recurring"] == {"interval": "year"}
    assert sent[0].idempotency_key and sent[0].idempotency_key.startswith(f"parlor:checkout:{user_id}:premium:monthly:")
    assert sent[2].idempotency_key == f"parlor:checkout:{user_id}:premium:yearly:click-1"


async def test_lifetime_and_credit_pack_checkouts_are_one_time_payments(
    client: TestClient, fake_stripe: FakeStripe
) -> None:
    user = await register(client)
    await start_checkout(client, user, "lifetime")
    await buy_pack(client, user, "pro")
    lifetime, pack = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert lifetime.params["mode"] == "payment" and lifetime.params["metadata"]["kind"] == "lifetime"
    assert "recurring" not in lifetime.params["line_items"][0]["price_data"]
    assert lifetime.params["line_items"][0]["price_data"]["unit_amount"] == "19999"
    assert pack.params["mode"] == "payment"
    assert pack.params["metadata"] == {
        "user_id": user["user"]["id"],
        "kind": "credits",
        "pack": "pro",
        "credits": "1000",
    }
    assert pack.params["line_items"][0]["price_data"]["unit_amount"] == "5999"


async def test_signed_events_make_the_user_premium_once(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection, sockets: list[Any]
) -> None:
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "plan")
    sub_id, completed, created = await subscribe(client, fake_stripe, user)
    first = await deliver_ok(client, completed)
    assert first == {"received": True, "duplicate": False}
    for body in [completed] * 4 + [created] * 5:
        await deliver_ok(client, body)
    assert await plan_of(db, user) == "premium"
    subs = await subscriptions_of(db, user)
    assert len(subs) == 1
    assert subs[0]["provider"] == "stripe" and subs[0]["status"] == "active" and subs[0]["period"] == "monthly"
    period_end = fake_stripe.subscriptions[sub_id]["items"]["data"][0]["current_period_end"]
    assert int(subs[0]["current_period_end"].timestamp()) == period_end, "the period end comes from the items"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM billing_events WHERE event_id = ANY($1::text[])",
            [json.loads(completed)["id"], json.loads(created)["id"]],
        )
        == 2
    )
    status = await (await client.get(f"{S}/status", headers=bearer(user))).json()
    assert status["plan"] == "premium" and status["credits"] == 0
    assert [s["status"] for s in status["subscriptions"]] == ["active"]
    assert status["limits"]["max_personas"] == 0
    await asyncio.sleep(0.3)
    assert inbox["plan"] == [{"plan": "premium"}], "one plan event, sent once"


async def test_any_order_and_any_repeats_give_the_same_state_and_ledger(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    """The same Stripe history delivered in order, reversed, and every event 5 times (interleaved)."""

    async def history(user: dict[str, Any]) -> list[str]:
        sub_id, completed, created = await subscribe(client, fake_stripe, user)
        base = int(time.time())
        sub = fake_stripe.subscriptions[sub_id]
        updated = {**sub, "cancel_at_period_end": True}
        renewed_end = sub["items"]["data"][0]["current_period_end"] + 30 * 86400
        renewed = json.loads(json.dumps(updated))
        renewed["items"]["data"][0]["current_period_end"] = renewed_end
        pack = fake_stripe.complete_checkout((await buy_pack(client, user))["id"])
        invoice = fake_stripe.invoice(sub_id)
        return [
            completed,
            created,
            event("customer.subscription.updated", updated, created=base + 1),
            event("customer.subscription.updated", renewed, created=base + 2),
            event("checkout.session.completed", pack, created=base + 2),
            event("invoice.paid", invoice, created=base + 3),
        ]

    async def outcome(user: dict[str, Any]) -> tuple[Any, ...]:
        renewed_end = json.loads(bodies[user["user"]["id"]][3])["data"]["object"]["items"]["data"][0]
        subs = [
            (
                s["status"],
                s["cancel_at_period_end"],
                int(s["current_period_end"].timestamp()) - renewed_end["current_period_end"],
            )
            for s in await subscriptions_of(db, user)
        ]
        balance, ledger = await ledger_of(db, user)
        invoices = (await (await client.get("/api/v1/billing/invoices", headers=bearer(user))).json())["items"]
        return (await plan_of(db, user), subs, balance, ledger, [(i["status"], i["amount_cents"]) for i in invoices])

    in_order, reversed_, repeated = await register(client), await register(client), await register(client)
    bodies = {}
    for user in (in_order, reversed_, repeated):
        bodies[user["user"]["id"]] = await history(user)
    for body in bodies[in_order["user"]["id"]]:
        await deliver_ok(client, body)
    for body in reversed(bodies[reversed_["user"]["id"]]):
        await deliver_ok(client, body)
    many = bodies[repeated["user"]["id"]] * 5
    many.reverse()
    await asyncio.gather(*(deliver_ok(client, body) for body in many))

    expected = (
        "premium",
        [("active", True, 0)],  # the newest event's state: cancelling, on the renewed period end
        50,
        [(50, "purchase", "stripe_checkout")],
        [("paid", 999)],
    )
    for user in (in_order, reversed_, repeated):
        assert await outcome(user) == expected


async def test_a_bad_signature_is_refused_and_changes_nothing(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    _, completed, created = await subscribe(client, fake_stripe, user)
    forged = await deliver(client, completed, secret="whsec_someone_else")
    assert forged.status == 400
    assert (await forged.json())["error"]["code"] == "invalid_signature"
    missing = await client.post(WEBHOOK, data=created.encode())
    assert missing.status == 400 and (await missing.json())["error"]["code"] == "invalid_signature"
    tampered = created.replace('"active"', '"trialing"')
    resp = await client.post(WEBHOOK, data=tampered.encode(), headers={"Stripe-Signature": sign(created)})
    assert resp.status == 400
    stale = sign(created, timestamp=int(time.time()) - 3600)
    resp = await client.post(WEBHOOK, data=created.encode(), headers={"Stripe-Signature": stale})
    assert resp.status == 400, "outside the 300 s tolerance"
    assert await plan_of(db, user) == "free"
    assert await subscriptions_of(db, user) == []
    assert await outcome_of(db, completed) is None and await outcome_of(db, created) is None


async def test_a_credit_pack_adds_its_credits_once(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection, sockets: list[Any]
) -> None:
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "credits", "plan")
    session = await buy_pack(client, user, "starter")
    completed = fake_stripe.complete_checkout(session["id"])
    body = event("checkout.session.completed", completed)
    answers = await asyncio.gather(*(deliver_ok(client, body) for _ in range(5)))
    assert sorted(a["duplicate"] for a in answers) == [False, True, True, True, True]
    balance, ledger = await ledger_of(db, user)
    assert balance == 50 and ledger == [(50, "purchase", "stripe_checkout")]
    assert sum(delta for delta, _, _ in ledger) == balance
    entry = await db.fetchrow("SELECT idempotency_key, ref_id FROM credit_ledger WHERE user_id = $1", uid(user))
    assert entry["idempotency_key"] == f"stripe:{session['id']}" and entry["ref_id"] == session["id"]
    # The same purchase announced again by another event type (async payment) adds nothing either.
    await deliver_ok(client, event("checkout.session.async_payment_succeeded", completed))
    assert (await ledger_of(db, user))[0] == 50
    assert await plan_of(db, user) == "free", "a credit pack is not a subscription"
    await asyncio.sleep(0.3)
    assert inbox["credits"] == [{"balance": 50}] and inbox["plan"] == []


async def test_an_unpaid_checkout_adds_nothing_until_paid(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    session = await buy_pack(client, user)
    pending = {**fake_stripe.sessions[session["id"]], "status": "complete", "payment_status": "unpaid"}
    pending = FakeStripe.public(pending)
    body = event("checkout.session.completed", pending)
    await deliver_ok(client, body)
    assert (await ledger_of(db, user))[0] == 0
    assert await outcome_of(db, body) == "ignored"
    paid = fake_stripe.complete_checkout(session["id"])
    await deliver_ok(client, event("checkout.session.async_payment_succeeded", paid))
    assert (await ledger_of(db, user))[0] == 50


async def test_lifetime_purchase_is_premium_for_good(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    session = await start_checkout(client, user, "lifetime")
    await deliver_ok(client, event("checkout.session.completed", fake_stripe.complete_checkout(session["id"])))
    assert await plan_of(db, user) == "premium"
    [sub] = await subscriptions_of(db, user)
    assert sub["period"] == "lifetime" and sub["current_period_end"] is None and sub["status"] == "active"


async def test_subscription_deleted_goes_back_to_free(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection, sockets: list[Any]
) -> None:
    user = await register(client)
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)
    inbox = Inbox(sio, "plan")
    sub_id, completed, created = await subscribe(client, fake_stripe, user)
    await deliver_ok(client, completed)
    await deliver_ok(client, created)
    assert await plan_of(db, user) == "premium"
    gone = {**fake_stripe.subscriptions[sub_id], "status": "canceled", "canceled_at": int(time.time())}
    deleted = event("customer.subscription.deleted", gone, created=int(time.time()) + 1)
    await deliver_ok(client, deleted)
    await deliver_ok(client, deleted)
    assert await plan_of(db, user) == "free"
    assert [s["status"] for s in await subscriptions_of(db, user)] == ["canceled"]
    # An older update arriving late does not bring the subscription back.
    await deliver_ok(client, event("customer.subscription.updated", fake_stripe.subscriptions[sub_id], created=1))
    assert await plan_of(db, user) == "free"
    history = await (await client.get(f"{S}/history", headers=bearer(user))).json()
    assert [(h["provider"], h["status"]) for h in history["items"]] == [("stripe", "canceled")]
    await asyncio.sleep(0.3)
    assert inbox["plan"] == [{"plan": "premium"}, {"plan": "free"}]


async def test_same_second_events_apply_in_lifecycle_order(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    sub_id, _, _ = await subscribe(client, fake_stripe, user)
    now = int(time.time())
    sub = fake_stripe.subscriptions[sub_id]
    await deliver_ok(client, event("customer.subscription.deleted", {**sub, "status": "canceled"}, created=now))
    await deliver_ok(client, event("customer.subscription.updated", sub, created=now))
    await deliver_ok(client, event("customer.subscription.created", sub, created=now))
    assert await plan_of(db, user) == "free"
    assert [s["status"] for s in await subscriptions_of(db, user)] == ["canceled"]


@pytest.mark.parametrize(
    ("stripe_status", "ours", "plan"),
    [
        ("trialing", "active", "premium"),
        ("past_due", "past_due", "premium"),
        ("unpaid", "past_due", "premium"),
        ("incomplete", "incomplete", "free"),
        ("incomplete_expired", "canceled", "free"),
        ("paused", "paused", "free"),
    ],
)
async def test_stripe_statuses_map_to_ours(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection, stripe_status: str, ours: str, plan: str
) -> None:
    user = await register(client)
    sub_id, _, _ = await subscribe(client, fake_stripe, user)
    sub = {**fake_stripe.subscriptions[sub_id], "status": stripe_status}
    await deliver_ok(client, event("customer.subscription.updated", sub))
    assert [s["status"] for s in await subscriptions_of(db, user)] == [ours]
    assert await plan_of(db, user) == plan


async def test_invoices_are_listed_newest_first(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    sub_id, completed, created = await subscribe(client, fake_stripe, user)
    await deliver_ok(client, completed)
    await deliver_ok(client, created)
    first = fake_stripe.invoice(sub_id, amount=999)
    first["created"] -= 100
    failed = fake_stripe.invoice(sub_id, paid=False, amount=999)
    now = int(time.time())
    await deliver_ok(client, event("invoice.paid", first, created=now))
    # A failed attempt of the same invoice, older than its payment, arrives late: it stays paid.
    await deliver_ok(client, event("invoice.payment_failed", {**first, "status": "open"}, created=now - 10))
    await deliver_ok(client, event("invoice.payment_failed", failed, created=now + 1))
    resp = await client.get("/api/v1/billing/invoices?limit=1", headers=bearer(user))
    assert resp.status == 200
    page = await resp.json()
    assert [i["id"] for i in page["items"]] == [failed["id"]] and page["next_cursor"]
    assert page["items"][0]["status"] == "payment_failed"
    rest = await (
        await client.get(f"/api/v1/billing/invoices?limit=5&cursor={page['next_cursor']}", headers=bearer(user))
    ).json()
    [paid] = rest["items"]
    assert paid["id"] == first["id"] and paid["status"] == "paid" and paid["amount_cents"] == 999
    assert paid["currency"] == "usd" and paid["hosted_url"] == first["hosted_invoice_url"]
    assert paid["provider_subscription_id"] == sub_id and paid["period_end"]
    other = await register(client)
    assert (await (await client.get("/api/v1/billing/invoices", headers=bearer(other))).json())["items"] == []


async def test_cancel_at_period_end_keeps_premium_until_stripe_ends_it(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    user = await register(client)
    nothing = await client.post(f"{S}/cancel", headers=bearer(user))
    assert nothing.status == 404 and (await nothing.json())["error"]["code"] == "no_subscription"
    sub_id, completed, created = await subscribe(client, fake_stripe, user)
    await deliver_ok(client, completed)
    await deliver_ok(client, created)
    resp = await client.post(f"{S}/cancel", headers=bearer(user))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["cancel_at_period_end"] is True and body["status"] == "active" and body["provider"] == "stripe"
    [update] = fake_stripe.requests_to("POST", f"/v1/subscriptions/{sub_id}")
    assert update.params == {"cancel_at_period_end": "true"} and update.idempotency_key
    assert await plan_of(db, user) == "premium"
    # Stripe's own event for the update, then the end of the period.
    await deliver_ok(client, event("customer.subscription.updated", fake_stripe.subscriptions[sub_id]))
    assert (await subscriptions_of(db, user))[0]["cancel_at_period_end"] is True
    ended = {**fake_stripe.subscriptions[sub_id], "status": "canceled"}
    await deliver_ok(client, event("customer.subscription.deleted", ended, created=int(time.time()) + 5))
    assert await plan_of(db, user) == "free"


async def test_portal_opens_for_the_users_customer(client: TestClient, fake_stripe: FakeStripe) -> None:
    user = await register(client)
    resp = await client.post(f"{S}/portal", headers=bearer(user))
    assert resp.status == 200
    body = await resp.json()
    assert body["url"].startswith("https://billing.stripe.com/")
    [sent] = fake_stripe.requests_to("POST", "/v1/billing_portal/sessions")
    assert sent.params["customer"] in fake_stripe.customers
    assert sent.params["return_url"]


async def test_events_never_change_another_users_plan(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    alice, mallory = await register(client), await register(client)
    # Mallory pays; the events' metadata (or client_reference_id) name Alice.
    checkout = await start_checkout(client, mallory)
    completed = fake_stripe.complete_checkout(checkout["id"])
    sub = fake_stripe.subscriptions[completed["subscription"]]
    alice_id = alice["user"]["id"]
    forged = [
        event("checkout.session.completed", {**completed, "metadata": {**completed["metadata"], "user_id": alice_id}}),
        event("checkout.session.completed", {**completed, "client_reference_id": alice_id}),
        event("customer.subscription.created", {**sub, "metadata": {**sub["metadata"], "user_id": alice_id}}),
    ]
    for body in forged:
        await deliver_ok(client, body)
        assert await outcome_of(db, body) == "refused"
    assert await plan_of(db, alice) == "free" and await plan_of(db, mallory) == "free"
    assert await subscriptions_of(db, alice) == [] and await subscriptions_of(db, mallory) == []

    # Alice subscribes for real; an event moving her subscription to Mallory's customer is refused.
    sub_id, a_completed, a_created = await subscribe(client, fake_stripe, alice)
    await deliver_ok(client, a_completed)
    await deliver_ok(client, a_created)
    stolen = {**fake_stripe.subscriptions[sub_id], "customer": sub["customer"], "metadata": {}}
    body = event("customer.subscription.updated", stolen, created=int(time.time()) + 5)
    await deliver_ok(client, body)
    assert await outcome_of(db, body) == "refused"
    assert await plan_of(db, alice) == "premium" and await plan_of(db, mallory) == "free"
    # A customer nobody here owns: recorded, ignored.
    unknown = event("customer.subscription.created", {**sub, "customer": "cus_unknown", "metadata": {}})
    await deliver_ok(client, unknown)
    assert await outcome_of(db, unknown) == "ignored"


async def test_unknown_event_types_are_recorded_and_ignored(client: TestClient, db: asyncpg.Connection) -> None:
    body = event("charge.refunded", {"id": "ch_1", "object": "charge"})
    assert await deliver_ok(client, body) == {"received": True, "duplicate": False}
    assert await outcome_of(db, body) == "ignored"
    assert (await deliver_ok(client, body))["duplicate"] is True


async def test_bad_input_names_the_field(client: TestClient) -> None:
    user = await register(client)
    cases = [
        (f"{S}/checkout", {"plan": "gold"}, "plan"),
        (f"{S}/checkout", {"plan": "premium", "period": "weekly"}, "period"),
        (f"{S}/checkout", {"plan": "premium", "coupon": "x"}, "coupon"),
        ("/api/v1/credits/checkout", {"pack": "mega"}, "pack"),
        ("/api/v1/credits/checkout", {}, "pack"),
    ]
    for path, body, field in cases:
        resp = await client.post(path, json=body, headers=bearer(user))
        assert resp.status == 422, (path, body)
        error = (await resp.json())["error"]
        assert error["message"].startswith(field) and error["details"][0]["field"] == field
    resp = await client.post(
        f"{S}/checkout", json={"plan": "premium"}, headers={**bearer(user), "Idempotency-Key": "bad key!"}
    )
    assert resp.status == 422
    unsigned = await client.post(WEBHOOK, data=b"not json", headers={"Stripe-Signature": sign("not json")})
    assert unsigned.status == 400
    assert (await client.post(f"{S}/checkout", json={"plan": "premium"})).status == 401


async def test_stripe_errors_are_502_or_503_never_500(client: TestClient, fake_stripe: FakeStripe) -> None:
    user = await register(client)
    fake_stripe.fail_next(Failure(400, "invalid_request_error", "No such price"))
    resp = await client.post(f"{S}/checkout", json={"plan": "premium"}, headers=bearer(user))
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "billing_provider_error"
    await fake_stripe.close()
    resp = await client.post(f"{S}/portal", headers=bearer(user))
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "billing_unavailable"


async def test_plans_list_limits_and_prices(client: TestClient, settings: Settings) -> None:
    resp = await client.get(f"{S}/plans")
    assert resp.status == 200
    body = await resp.json()
    free, premium = body["items"]
    assert (
        free["name"] == "free"
        and free["limits"]["daily_messages"] == settings.free_daily_messages
        and free["prices"] == []
    )
    assert free["limits"]["history_days"] == 7
    assert premium["name"] == "premium" and premium["limits"]["daily_messages"] == 0
    assert [(p["period"], p["amount_cents"], p["recurring"]) for p in premium["prices"]] == [
        ("daily", 199, True),
        ("monthly", 999, True),
        ("yearly", 7999, True),
        ("lifetime", 19999, False),
    ]
    assert body["stripe_enabled"] is True and body["google_play_enabled"] is False


async def test_without_stripe_billing_answers_503(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    user = await register(client)
    for path, body in [
        (f"{S}/checkout", {"plan": "premium"}),
        ("/api/v1/credits/checkout", {"pack": "starter"}),
        (f"{S}/portal", None),
        (f"{S}/cancel", None),
        (f"{S}/verify", {"product_id": "premium_monthly", "purchase_token": "t"}),
    ]:
        resp = await client.post(path, json=body, headers=bearer(user))
        assert resp.status == 503, path
        assert (await resp.json())["error"]["code"] == "billing_disabled"
    webhook = await client.post(WEBHOOK, data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert webhook.status == 503 and (await webhook.json())["error"]["code"] == "billing_disabled"
    plans = await client.get(f"{S}/plans")
    assert plans.status == 200 and (await plans.json())["stripe_enabled"] is False
    status = await client.get(f"{S}/status", headers=bearer(user))
    assert status.status == 200
    assert await status.json() == {
        "plan": "free",
        "limits": {
            "daily_messages": settings.free_daily_messages,
            "max_personas": settings.free_max_personas,
            "history_days": settings.free_history_days,
            "storage_mb": settings.free_storage_mb,
        },
        "subscriptions": [],
        "credits": 0,
    }
    assert (await (await client.get(f"{S}/history", headers=bearer(user))).json())["items"] == []


async def test_credit_packs_and_admin_plan(client: Any, settings: Any) -> None:
    import asyncpg

    from tests.helpers import bearer, register

    admin = await register(client)
    user = await register(client)
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1::uuid", admin["user"]["id"])
    await conn.close()
    packs = await (await client.get("/api/v1/credits/packs", headers=bearer(user))).json()
    assert packs["items"] and all(p["credits"] > 0 and p["price_cents"] > 0 for p in packs["items"])
    url = f"/api/v1/admin/users/{user['user']['id']}/plan"
    assert (await client.post(url, json={"plan": "premium"}, headers=bearer(user))).status == 403
    granted = await client.post(url, json={"plan": "premium"}, headers=bearer(admin))
    assert granted.status == 200 and (await granted.json())["plan"] == "premium"
    me = await (await client.get("/api/v1/auth/me", headers=bearer(user))).json()
    assert me["plan"] == "premium"
    ended = await (await client.post(url, json={"plan": "free"}, headers=bearer(admin))).json()
    assert ended["plan"] == "free"
    bad = await client.post(url, json={"plan": "gold"}, headers=bearer(admin))
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "plan"
    audit = await (await client.get("/api/v1/admin/audit-log", headers=bearer(admin))).json()
    assert [e["action"] for e in audit["items"] if e["target_id"] == user["user"]["id"]][:2] == ["user.plan"] * 2


async def test_malformed_objects_are_recorded_and_ignored(
    client: TestClient, fake_stripe: FakeStripe, db: asyncpg.Connection
) -> None:
    """Fields of the wrong type read as absent (services.billing.stripe_objects): the event is ignored."""
    user = await register(client)
    completed = fake_stripe.complete_checkout((await start_checkout(client, user))["id"])
    customer = completed["customer"]
    bodies = [
        event("checkout.session.completed", {**completed, "id": 42}),
        event("checkout.session.completed", {**completed, "metadata": "premium", "subscription": ["sub_1"]}),
        event("customer.subscription.updated", {"id": "sub_1", "customer": {"id": customer}, "status": ["active"]}),
        event("invoice.paid", {"object": "invoice", "customer": customer, "amount_paid": 999}),
    ]
    for body in bodies:
        assert await deliver_ok(client, body) == {"received": True, "duplicate": False}
        assert await outcome_of(db, body) == "ignored"
    assert await plan_of(db, user) == "free" and await subscriptions_of(db, user) == []
