"""REST: /api/v1/subscription/*, /api/v1/billing/*, /api/v1/credits/checkout (docs/billing.md).

Stripe-backed endpoints answer 503 `billing_disabled` while STRIPE_SECRET_KEY is unset, and Google Play
verification while PLAY_PACKAGE_NAME/PLAY_PRODUCTS are; the plan catalogue and the status always work.
The webhook is unauthenticated (Stripe signs it) and reads the raw body: the signature covers its bytes."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from core.entities import Principal
from core.errors import PayloadTooLarge, ValidationFailed
from core.pages import Position, decode_cursor, encode_cursor
from core.wire import InvoiceOut, SubscriptionOut
from handlers.api import Api
from handlers.keys import BILLING_SERVICE, PLANS, PLAY_SERVICE, SETTINGS, STRIPE_WEBHOOKS, SUBSCRIPTION_SERVICE
from handlers.schemas import CursorParam, Strict

api = Api("billing")
S = "/api/v1/subscription"
_REQUEST_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class CheckoutIn(Strict):
    plan: Literal["premium"]
    period: Literal["daily", "monthly", "yearly", "lifetime"] = "monthly"


class CreditCheckoutIn(Strict):
    pack: str = Field(min_length=1, max_length=64, description="A pack name from GET /credits/packs")


class PlayVerifyIn(Strict):
    product_id: str = Field(min_length=1, max_length=200, description="The Play subscription product id")
    purchase_token: str = Field(min_length=1, max_length=4096, description="From the Play Billing Library")


class HostedPageOut(BaseModel):
    id: str
    url: str


class PortalOut(BaseModel):
    url: str


class PlanLimitsOut(BaseModel):
    daily_messages: int = Field(description="0 = unlimited")
    max_personas: int = Field(description="0 = unlimited")
    history_days: int = Field(description="0 = keep everything")
    storage_mb: int


class PlanPriceOut(BaseModel):
    period: Literal["daily", "monthly", "yearly", "lifetime"]
    amount_cents: int
    currency: str
    recurring: bool


class PlanOut(BaseModel):
    name: str
    limits: PlanLimitsOut
    prices: list[PlanPriceOut]


class PlayProductOut(BaseModel):
    product_id: str
    period: str


class PlanCatalogOut(BaseModel):
    items: list[PlanOut]
    stripe_enabled: bool
    google_play_enabled: bool
    google_play_products: list[PlayProductOut]


class SubscriptionStatusOut(BaseModel):
    plan: str
    limits: PlanLimitsOut
    subscriptions: list[SubscriptionOut] = Field(description="The subscriptions that grant a plan now")
    credits: int


class SubscriptionHistoryOut(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None = None


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    next_cursor: str | None


class InvoiceQuery(Strict):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class _InvoicePosition(Position):
    """Invoices newest first; Stripe's ids are strings, so not a Keyset."""

    created_at: datetime
    id: str


class WebhookAck(BaseModel):
    received: bool
    duplicate: bool


def _request_key(request: web.Request) -> str | None:
    """The client's Idempotency-Key header, if any: retries with it get the same Checkout Session."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _REQUEST_KEY.match(key):
        raise ValidationFailed(
            "Idempotency-Key: 1..100 characters of A-Z a-z 0-9 _ . : -",
            details=[{"field": "Idempotency-Key", "message": "invalid"}],
        )
    return key


@api.route("GET", f"{S}/plans", summary="Plans with their limits and prices", auth=False, response=PlanCatalogOut)
async def plans(request: web.Request) -> dict[str, Any]:
    billing, play = request.app[BILLING_SERVICE], request.app[PLAY_SERVICE]
    return {
        "items": billing.catalog(),
        "stripe_enabled": billing.enabled,
        "google_play_enabled": play.enabled,
        "google_play_products": [{"product_id": k, "period": v} for k, v in play.products().items()],
    }


@api.route("GET", f"{S}/status", summary="My plan, current subscriptions and credits", response=SubscriptionStatusOut)
async def status(request: web.Request, user: Principal) -> dict[str, Any]:
    current = await request.app[SUBSCRIPTION_SERVICE].status(user.id)
    return {
        "plan": current.plan,
        "limits": asdict(request.app[PLANS].limits(current.plan)),
        "subscriptions": [SubscriptionOut.model_validate(s) for s in current.subscriptions],
        "credits": current.credits,
    }


@api.route(
    "POST",
    f"{S}/checkout",
    summary="Start a Stripe Checkout for premium",
    body=CheckoutIn,
    response=HostedPageOut,
    errors=(502, 503),
)
async def checkout(request: web.Request, user: Principal, body: CheckoutIn) -> dict[str, Any]:
    """Subscription mode for daily, monthly and yearly; a one-time payment for lifetime. Send the user to
    `url`; the plan changes when Stripe's webhook arrives. An `Idempotency-Key` header makes retries
    return the same session (without one, repeats within a minute do)."""
    session = await request.app[BILLING_SERVICE].checkout_subscription(
        user, plan=body.plan, period=body.period, request_key=_request_key(request)
    )
    return {"id": session.id, "url": session.url}


@api.route(
    "POST",
    "/api/v1/credits/checkout",
    summary="Start a Stripe Checkout for a credit pack",
    body=CreditCheckoutIn,
    response=HostedPageOut,
    errors=(502, 503),
)
async def credits_checkout(request: web.Request, user: Principal, body: CreditCheckoutIn) -> dict[str, Any]:
    """The pack's credits are added once, when Stripe's `checkout.session.completed` arrives."""
    session = await request.app[BILLING_SERVICE].checkout_credits(
        user, pack=body.pack, request_key=_request_key(request)
    )
    return {"id": session.id, "url": session.url}


@api.route("POST", f"{S}/portal", summary="Open the Stripe Customer Portal", response=PortalOut, errors=(502, 503))
async def portal(request: web.Request, user: Principal) -> dict[str, Any]:
    session = await request.app[BILLING_SERVICE].portal(user)
    return {"url": session.url}


@api.route(
    "POST",
    f"{S}/cancel",
    summary="Cancel my Stripe subscription at the end of the paid period",
    response=SubscriptionOut,
    errors=(404, 409, 502, 503),
)
async def cancel(request: web.Request, user: Principal) -> SubscriptionOut:
    """404 `no_subscription` without a Stripe subscription; 409 `cancel_in_store` for Google Play ones."""
    return SubscriptionOut.model_validate(await request.app[BILLING_SERVICE].cancel(user))


@api.route(
    "GET", f"{S}/history", summary="My subscriptions, every provider, newest first", response=SubscriptionHistoryOut
)
async def history(request: web.Request, user: Principal) -> dict[str, Any]:
    rows = await request.app[SUBSCRIPTION_SERVICE].history(user.id)
    return {"items": [SubscriptionOut.model_validate(s) for s in rows], "next_cursor": None}


@api.route(
    "POST",
    f"{S}/verify",
    summary="Verify a Google Play subscription purchase",
    body=PlayVerifyIn,
    response=SubscriptionOut,
    errors=(409, 502, 503),
)
async def verify(request: web.Request, user: Principal, body: PlayVerifyIn) -> SubscriptionOut:
    """Reads the purchase from Google Play, acknowledges it and stores it. 422 `unknown_product`,
    `product_mismatch` or `invalid_purchase_token`; 409 `purchase_token_in_use` when the purchase is
    another account's."""
    row = await request.app[PLAY_SERVICE].verify(user, product_id=body.product_id, purchase_token=body.purchase_token)
    return SubscriptionOut.model_validate(row)


@api.route(
    "GET", "/api/v1/billing/invoices", summary="My invoices, newest first", query=InvoiceQuery, response=InvoicePage
)
async def invoices(request: web.Request, user: Principal, query: InvoiceQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, _InvoicePosition)
    before = (position.created_at, position.id) if position is not None else None
    rows = await request.app[BILLING_SERVICE].invoices(user.id, before=before, limit=query.limit)
    cursor = None
    if len(rows) == query.limit:
        cursor = encode_cursor(_InvoicePosition(created_at=rows[-1].created_at, id=rows[-1].id))
    return {"items": [InvoiceOut.of(i) for i in rows], "next_cursor": cursor}


@api.route(
    "POST",
    "/api/v1/billing/webhook",
    summary="Stripe webhook (signed by Stripe)",
    auth=False,
    response=WebhookAck,
    errors=(400, 413, 503),
)
async def webhook(request: web.Request) -> dict[str, Any]:
    """400 `invalid_signature` when the Stripe-Signature header does not match the raw body. Every
    event is applied once: a repeat answers 200 with `duplicate: true` and changes nothing."""
    limit = request.app[SETTINGS].json_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    payload = await request.read()
    if len(payload) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    result = await request.app[STRIPE_WEBHOOKS].handle_webhook(payload, request.headers.get("Stripe-Signature"))
    return {"received": True, "duplicate": result.duplicate}
