"""BillingService: Stripe Checkout (subscriptions, lifetime, credit packs), the Customer Portal,
cancelling at period end, invoices, and the webhook that keeps all of it in sync.

Webhook rules (docs/billing.md): the signature is checked on the raw body; each event is recorded in
billing_events in the same transaction as its effects, so a retry changes nothing; subscription
states carry the event's `created` time and an older one never overwrites a newer one, whatever
order Stripe delivers them in; an object is only ever applied to the user who owns its Stripe
customer — an event whose metadata names someone else is recorded as refused and logged."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import Invoice, Principal, Subscription
from core.errors import Conflict, NotFound, Unavailable, ValidationFailed
from providers.stripe_billing import HostedSession, StripeBilling, StripeEvent
from services.billing_config import PAID_PLANS, PERIODS, BillingSettings, Period
from services.credits import CreditService
from services.plans import Plans
from services.subscriptions import EPOCH, PlanChange, SubscriptionOwnedByOther, SubscriptionService, SubscriptionState
from storage.billing import BillingEventStore, InvoiceStore, StripeCustomerStore
from storage.subscriptions import ENTITLED, SubscriptionStore

log = structlog.get_logger(__name__)
PROVIDER = "stripe"
# Stripe subscription status → ours. Only active, past_due and in_grace grant the plan.
STRIPE_STATUS = {
    "trialing": "active",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
    "incomplete": "incomplete",
    "paused": "paused",
}
INTERVAL_PERIOD: dict[str, Period] = {"day": "daily", "month": "monthly", "year": "yearly"}
PERIOD_INTERVAL = {"daily": "day", "monthly": "month", "yearly": "year"}
# Events of one subscription created in the same second (Stripe's clock ticks in seconds) apply in
# lifecycle order: created, then updated, then deleted.
TIE_BREAK = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.deleted": 2,
}
# Double clicks within this window get the same Checkout Session (the same idempotency key).
CHECKOUT_WINDOW_SECONDS = 60


class Refused(Exception):
    """The event names a user who does not own the object: never applied."""


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    type: str
    duplicate: bool
    outcome: str | None  # applied | ignored | refused; None for a duplicate


@dataclass
class _Effects:
    """What to announce once the event's transaction committed."""

    changes: list[PlanChange | None] = field(default_factory=list)
    balances: list[tuple[UUID, int]] = field(default_factory=list)


def _id(value: Any) -> str | None:
    """An object reference: Stripe sends the id, or the object itself when expanded."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) and value > 0 else None


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return _dict(obj.get("metadata"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _plan(meta: dict[str, Any]) -> str:
    plan = meta.get("plan")
    return plan if isinstance(plan, str) and plan in PAID_PLANS else "premium"


def _items(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    container = obj.get(key)
    data = container.get("data") if isinstance(container, dict) else None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _window_key() -> int:
    return int(time.time() // CHECKOUT_WINDOW_SECONDS)


class BillingService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: BillingSettings,
        stripe: StripeBilling | None,
        subscriptions: SubscriptionService,
        credits: CreditService,
        plans: Plans,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._stripe = stripe
        self._subscriptions = subscriptions
        self._credits = credits
        self._plans = plans
        self._events = BillingEventStore()
        self._customers = StripeCustomerStore()
        self._invoices = InvoiceStore()
        self._store = SubscriptionStore()
        self._handlers: dict[str, Callable[[asyncpg.Connection, StripeEvent, _Effects], Awaitable[str]]] = {
            "checkout.session.completed": self._checkout_completed,
            "checkout.session.async_payment_succeeded": self._checkout_completed,
            "customer.subscription.created": self._subscription_changed,
            "customer.subscription.updated": self._subscription_changed,
            "customer.subscription.deleted": self._subscription_changed,
            "invoice.paid": self._invoice,
            "invoice.payment_failed": self._invoice,
        }

    @property
    def enabled(self) -> bool:
        return self._stripe is not None

    def _require_stripe(self) -> StripeBilling:
        if self._stripe is None:
            raise Unavailable("billing is not configured on this server (STRIPE_SECRET_KEY)", code="billing_disabled")
        return self._stripe

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
        stripe = self._require_stripe()
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
        session = await stripe.create_checkout_session(params, idempotency_key=key)
        log.info("checkout created", user_id=str(user.id), session_id=session.id, plan=plan, period=period)
        return session

    async def checkout_credits(self, user: Principal, *, pack: str, request_key: str | None = None) -> HostedSession:
        """A Checkout Session (payment mode) for a credit pack; the webhook adds the credits once."""
        stripe = self._require_stripe()
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
        session = await stripe.create_checkout_session(params, idempotency_key=key)
        log.info("credit checkout created", user_id=str(user.id), session_id=session.id, pack=chosen.name)
        return session

    async def portal(self, user: Principal) -> HostedSession:
        stripe = self._require_stripe()
        customer = await self._customer(user)
        return await stripe.create_portal_session(
            customer=customer,
            return_url=self._settings.billing_portal_return_url,
            idempotency_key=f"parlor:portal:{user.id}:{_window_key()}",
        )

    async def cancel(self, user: Principal) -> Subscription:
        """Cancel the user's Stripe subscription at the end of the paid period (it stays entitled until
        then; Stripe's `customer.subscription.deleted` ends it)."""
        stripe = self._require_stripe()
        async with self._pool.acquire() as conn:
            rows = [s for s in await self._store.for_user(conn, user.id) if s.status in ENTITLED]
        cancellable = [s for s in rows if s.provider == PROVIDER and s.period != "lifetime"]
        if not cancellable:
            if any(s.provider == "google_play" for s in rows):
                raise Conflict("Google Play subscriptions are cancelled in the Play Store", code="cancel_in_store")
            raise NotFound("no Stripe subscription to cancel", code="no_subscription")
        current = cancellable[0]
        data = await stripe.cancel_at_period_end(
            current.external_id, idempotency_key=f"parlor:cancel:{current.external_id}:{_window_key()}"
        )
        # Stripe's answer is its current state; keep the stored time so a newer webhook still wins.
        state = self._subscription_state(data, state_at=current.state_at)
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
        stripe = self._require_stripe()
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

    # --- webhook ---------------------------------------------------------------------------------

    async def handle_webhook(self, payload: bytes, signature: str | None) -> WebhookResult:
        stripe = self._require_stripe()
        event = stripe.construct_event(payload, signature)
        for attempt in (1, 2):
            effects = _Effects()
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    recorded = await self._events.record(conn, provider=PROVIDER, event_id=event.id, type=event.type)
                    if not recorded:
                        log.info("stripe event already applied", event_id=event.id, type=event.type)
                        return WebhookResult(event.id, event.type, duplicate=True, outcome=None)
                    outcome = await self._apply(conn, event, effects)
                    if outcome != "applied":
                        await self._events.set_outcome(conn, provider=PROVIDER, event_id=event.id, outcome=outcome)
                break
            except asyncpg.UniqueViolationError:
                # Another event applied the same credit purchase at the same moment: once more, the
                # ledger now answers "already applied".
                if attempt == 2:
                    raise
        await self._subscriptions.announce(*effects.changes)
        for user_id, balance in effects.balances:
            await self._credits.notify(user_id, balance)
        log.info("stripe event", event_id=event.id, type=event.type, outcome=outcome)
        return WebhookResult(event.id, event.type, duplicate=False, outcome=outcome)

    async def _apply(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        handler = self._handlers.get(event.type)
        if handler is None:
            return "ignored"
        try:
            async with conn.transaction():  # a savepoint: a refused event leaves nothing behind
                return await handler(conn, event, effects)
        except (Refused, SubscriptionOwnedByOther):
            effects.changes.clear()
            effects.balances.clear()
            log.warning("stripe event refused: it names a user who does not own the object", event_id=event.id)
            return "refused"

    async def _owner(self, conn: asyncpg.Connection, event: StripeEvent, customer: Any, *claimed: Any) -> UUID | None:
        """The user who owns the Stripe customer. Every user id the object claims (metadata,
        client_reference_id) must be that user, else Refused. None: the customer is not ours."""
        customer_id = _id(customer)
        owner = await self._customers.user_of(conn, customer_id) if customer_id else None
        if owner is None:
            log.warning("stripe event for a customer we do not know", event_id=event.id, customer=customer_id)
            return None
        for value in claimed:
            if value not in (None, "") and _uuid(value) != owner:
                log.warning(
                    "stripe event names another user than its customer's",
                    event_id=event.id,
                    customer=customer_id,
                    owner=str(owner),
                    claimed=str(value),
                )
                raise Refused
        return owner

    async def _checkout_completed(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        session = event.object
        session_id = _id(session)
        if not session_id or session.get("payment_status") not in ("paid", "no_payment_required"):
            return "ignored"  # an asynchronous payment: checkout.session.async_payment_succeeded follows
        meta = _meta(session)
        owner = await self._owner(
            conn, event, session.get("customer"), meta.get("user_id"), session.get("client_reference_id")
        )
        if owner is None:
            return "ignored"
        plan = _plan(meta)
        mode, kind = session.get("mode"), meta.get("kind")
        if mode == "subscription":
            subscription_id = _id(session.get("subscription"))
            period = meta.get("period")
            if not subscription_id or period not in PERIODS:
                return "ignored"
            # Paid: entitled now. Stored at the epoch, so any customer.subscription.* event (which
            # carries the dates and the status) overrides it, whichever arrives first.
            state = SubscriptionState(PROVIDER, subscription_id, plan, period, "active", None, None, False, EPOCH)
            effects.changes.append(await self._subscriptions.apply_in(conn, owner, state))
            return "applied"
        if mode == "payment" and kind == "lifetime":
            created = _time(event.created) or datetime.now(UTC)
            state = SubscriptionState(PROVIDER, session_id, plan, "lifetime", "active", None, None, False, created)
            effects.changes.append(await self._subscriptions.apply_in(conn, owner, state))
            return "applied"
        if mode == "payment" and kind == "credits":
            try:
                credits = int(meta.get("credits", ""))
            except ValueError:
                return "ignored"
            if credits <= 0:
                return "ignored"
            balance, applied = await self._credits.apply_in(
                conn,
                user_id=owner,
                delta=credits,
                reason="purchase",
                idempotency_key=f"stripe:{session_id}",
                ref_type="stripe_checkout",
                ref_id=session_id,
            )
            if applied:
                effects.balances.append((owner, balance))
                log.info("credits purchased", user_id=str(owner), credits=credits, session_id=session_id)
            return "applied"
        return "ignored"

    def _subscription_state(
        self, sub: dict[str, Any], *, state_at: datetime, deleted: bool = False
    ) -> SubscriptionState | None:
        subscription_id = _id(sub)
        status = "canceled" if deleted else STRIPE_STATUS.get(str(sub.get("status")))
        if not subscription_id or status is None:
            return None
        meta = _meta(sub)
        items = _items(sub, "items")
        period = meta.get("period")
        if period not in PERIODS or period == "lifetime":
            recurring = _dict(_dict(items[0].get("price")).get("recurring")) if items else {}
            period = INTERVAL_PERIOD.get(str(recurring.get("interval")), "monthly")
        # Current API versions keep the period on the items; older ones on the subscription.
        ends = [t for t in (_time(i.get("current_period_end")) for i in items) if t is not None]
        period_end = max(ends) if ends else _time(sub.get("current_period_end"))
        return SubscriptionState(
            provider=PROVIDER,
            external_id=subscription_id,
            plan=_plan(meta),
            period=period,
            status=status,
            current_period_end=period_end,
            grace_until=None,
            cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
            state_at=state_at,
        )

    async def _subscription_changed(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        sub = event.object
        owner = await self._owner(conn, event, sub.get("customer"), _meta(sub).get("user_id"))
        if owner is None:
            return "ignored"
        created = _time(event.created) or datetime.now(UTC)
        state_at = created + timedelta(microseconds=TIE_BREAK.get(event.type, 0))
        state = self._subscription_state(sub, state_at=state_at, deleted=event.type == "customer.subscription.deleted")
        if state is None:
            return "ignored"
        change = await self._subscriptions.apply_in(conn, owner, state)
        effects.changes.append(change)
        if change is not None and change.subscription is None:
            log.info("stripe event older than the stored state", event_id=event.id)
        return "applied"

    async def _invoice(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        invoice = event.object
        invoice_id = _id(invoice)
        details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
        subscription_id = _id(details.get("subscription")) or _id(invoice.get("subscription"))
        owner = await self._owner(conn, event, invoice.get("customer"), _meta(details).get("user_id"))
        if owner is None or not invoice_id:
            return "ignored"
        paid = event.type == "invoice.paid"
        hosted_url = invoice.get("hosted_invoice_url")
        ends = [_time(_dict(line.get("period")).get("end")) for line in _items(invoice, "lines")]
        period_ends = [t for t in ends if t is not None]
        created = _time(event.created) or datetime.now(UTC)
        await self._invoices.upsert(
            conn,
            id=invoice_id,
            user_id=owner,
            subscription_id=subscription_id,
            amount_cents=int(invoice.get("amount_paid" if paid else "amount_due") or 0),
            currency=str(invoice.get("currency") or self._settings.billing_currency).lower(),
            status="paid" if paid else "payment_failed",
            hosted_url=hosted_url if isinstance(hosted_url, str) else None,
            period_end=max(period_ends) if period_ends else _time(invoice.get("period_end")),
            created_at=_time(invoice.get("created")) or created,
            state_at=created,
        )
        return "applied"
