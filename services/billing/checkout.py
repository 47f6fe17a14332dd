"""BillingService: what a user asks of Stripe — Checkout (subscriptions, lifetime, credit packs), the
Customer Portal, cancelling at period end, invoices — and the plan catalogue. The webhook engine
(services.billing.webhooks) applies what Stripe reports back."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import Invoice, Principal, Subscription
from core.errors import Conflict, NotFound, ValidationFailed
from providers.stripe_billing import HostedSession
from services.billing.base import StripeArea, StripeDeps
from services.billing.config import PAID_PLANS, PERIODS
from services.billing.errors import require_stripe, stripe_call_errors
from services.billing.states import PERIOD_INTERVAL, PROVIDER, subscription_state
from services.billing.stripe_objects import StripeSubscription
from services.plans import Plans
from storage.subscriptions import ENTITLED, SubscriptionStore

# Named for the package: billing logs kept their logger name ("services.billing") through the split.
log = structlog.get_logger(__package__)
# Double clicks within this window get the same Checkout Session (the same idempotency key).
CHECKOUT_WINDOW_SECONDS = 60


def _window_key() -> int:
    return int(time.time() // CHECKOUT_WINDOW_SECONDS)


class BillingService(StripeArea):
    def __init__(self, deps: StripeDeps, *, plans: Plans) -> None:
        super().__init__(deps)
        self._plans = plans
        self._store = SubscriptionStore()

    @property
    def enabled(self) -> bool:
        return self._stripe is not None

    # --- catalogue -------------------------------------------------------------------------------

    def catalog(self) -> list[dict[str, Any]]:
        """The plans with their limits (services.plans) and prices."""
        prices = self._settings.premium_prices
        return [
            {"name": "free", "limits": asdict(self._plans.limits("free")), "prices": []},
            {
                "name": "premium",
                "limits": asdict(self._plans.limits("premium")),
                "prices": [
                    {
                        "period": p.period,
                        "amount_cents": p.amount_cents,
                        "currency": p.currency,
                        "recurring": p.period != "lifetime",
                    }
                    for p in prices.values()
                ],
            },
        ]

    # --- checkout, portal, cancel ----------------------------------------------------------------

    async def checkout_subscription(
        self, user: Principal, *, plan: str, period: str, request_key: str | None = None
    ) -> HostedSession:
        """A Checkout Session for `plan` in `period` (subscription mode; payment mode for lifetime)."""
        stripe = require_stripe(self._stripe)
        if plan not in PAID_PLANS:
            raise ValidationFailed(f"plan: {plan!r} is not sold", details=[{"field": "plan", "message": "unknown"}])
        if period not in PERIODS:
            raise ValidationFailed(f"period: {period!r}", details=[{"field": "period", "message": "unknown"}])
        price = self._settings.premium_prices[period]  # type: ignore[index]
        customer = await self._customer(user)
        lifetime = period == "lifetime"
        meta = {
            "user_id": str(user.id),
            "kind": "lifetime" if lifetime else "subscription",
            "plan": plan,
            "period": period,
        }
        if price.stripe_price:
            line: dict[str, Any] = {"price": price.stripe_price, "quantity": 1}
        else:
            price_data: dict[str, Any] = {
                "currency": price.currency,
                "unit_amount": price.amount_cents,
                "product_data": {"name": f"Parlor {plan.title()} ({period})"},
            }
            if not lifetime:
                price_data["recurring"] = {"interval": PERIOD_INTERVAL[period]}
            line = {"price_data": price_data, "quantity": 1}
        params: dict[str, Any] = {
            "mode": "payment" if lifetime else "subscription",
            "customer": customer,
            "client_reference_id": str(user.id),
            "metadata": meta,
            "line_items": [line],
            "success_url": self._settings.billing_success_url,
            "cancel_url": self._settings.billing_cancel_url,
        }
        if lifetime:
            params["payment_intent_data"] = {"metadata": meta}
        else:
            # Copied onto the subscription, so its own events name the user too.
            params["subscription_data"] = {"metadata": meta}
        key = f"parlor:checkout:{user.id}:{plan}:{period}:{request_key or _window_key()}"
        with stripe_call_errors():
            session = await stripe.create_checkout_session(params, idempotency_key=key)
        log.info("checkout created", user_id=str(user.id), session_id=session.id, plan=plan, period=period)
        return session

    async def checkout_credits(self, user: Principal, *, pack: str, request_key: str | None = None) -> HostedSession:
        """A Checkout Session (payment mode) for a credit pack; the webhook adds the credits once."""
        stripe = require_stripe(self._stripe)
        chosen = self._settings.credit_pack(pack)
        if chosen is None:
            names = ", ".join(p.name for p in self._settings.credit_packs)
            raise ValidationFailed(
                f"pack: unknown pack {pack!r} (one of: {names})",
                details=[{"field": "pack", "message": "unknown pack"}],
            )
        customer = await self._customer(user)
        meta = {"user_id": str(user.id), "kind": "credits", "pack": chosen.name, "credits": str(chosen.credits)}
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": customer,
            "client_reference_id": str(user.id),
            "metadata": meta,
            "payment_intent_data": {"metadata": meta},
            "line_items": [
                {
                    "price_data": {
                        "currency": chosen.currency,
                        "unit_amount": chosen.price_cents,
                        "product_data": {"name": f"{chosen.credits} Parlor credits ({chosen.name})"},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": self._settings.billing_success_url,
            "cancel_url": self._settings.billing_cancel_url,
        }
        key = f"parlor:credits:{user.id}:{chosen.name}:{request_key or _window_key()}"
        with stripe_call_errors():
            session = await stripe.create_checkout_session(params, idempotency_key=key)
        log.info("credit checkout created", user_id=str(user.id), session_id=session.id, pack=chosen.name)
        return session

    async def portal(self, user: Principal) -> HostedSession:
        stripe = require_stripe(self._stripe)
        customer = await self._customer(user)
        with stripe_call_errors():
            return await stripe.create_portal_session(
                customer=customer,
                return_url=self._settings.billing_portal_return_url,
                idempotency_key=f"parlor:portal:{user.id}:{_window_key()}",
            )

    async def cancel(self, user: Principal) -> Subscription:
        """Cancel the user's Stripe subscription at the end of the paid period (it stays entitled until
        then; Stripe's `customer.subscription.deleted` ends it)."""
        stripe = require_stripe(self._stripe)
        async with self._pool.acquire() as conn:
            rows = [s for s in await self._store.for_user(conn, user.id) if s.status in ENTITLED]
        cancellable = [s for s in rows if s.provider == PROVIDER and s.period != "lifetime"]
        if not cancellable:
            if any(s.provider == "google_play" for s in rows):
                raise Conflict("Google Play subscriptions are cancelled in the Play Store", code="cancel_in_store")
            raise NotFound("no Stripe subscription to cancel", code="no_subscription")
        current = cancellable[0]
        with stripe_call_errors():
            data = await stripe.cancel_at_period_end(
                current.external_id, idempotency_key=f"parlor:cancel:{current.external_id}:{_window_key()}"
            )
        # Stripe's answer is its current state; keep the stored time so a newer webhook still wins.
        state = subscription_state(StripeSubscription.model_validate(data), state_at=current.state_at)
        if state is not None:
            await self._subscriptions.apply(user.id, state)
        async with self._pool.acquire() as conn:
            row = await self._store.by_external(conn, PROVIDER, current.external_id)
        assert row is not None
        return row

    async def invoices(self, user_id: UUID, *, before: tuple[datetime, str] | None, limit: int) -> list[Invoice]:
        async with self._pool.acquire() as conn:
            return await self._invoices.page(conn, user_id, before=before, limit=limit)

    async def _customer(self, user: Principal) -> str:
        """The user's Stripe customer, created once (deterministic idempotency key) and stored."""
        async with self._pool.acquire() as conn:
            existing = await self._customers.customer_of(conn, user.id)
        if existing:
            return existing
        stripe = require_stripe(self._stripe)
        with stripe_call_errors():
            created = await stripe.create_customer(
                user_id=str(user.id), email=user.email, idempotency_key=f"parlor:customer:{user.id}"
            )
        async with self._pool.acquire() as conn:
            try:
                stored = await self._customers.link(conn, user.id, created)
            except asyncpg.UniqueViolationError as err:
                log.error("stripe customer already linked to another user", customer=created)
                raise Conflict("this payment account belongs to another user", code="customer_conflict") from err
        if stored is None:
            raise NotFound("user not found")
        return stored
