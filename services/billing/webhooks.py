"""StripeWebhooks: the engine that keeps subscriptions, credits and invoices in sync with Stripe's events.

Rules (docs/billing.md): the signature is checked on the raw body; each event is recorded in
billing_events in the same transaction as its effects, so a retry changes nothing; subscription
states carry the event's `created` time and an older one never overwrites a newer one, whatever
order Stripe delivers them in; an object is only ever applied to the user who owns its Stripe
customer — an event whose metadata names someone else is recorded as refused and logged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from core.entities import CreditChange
from providers.stripe_billing import StripeEvent
from services.billing.base import StripeArea, StripeDeps
from services.billing.config import PERIODS
from services.billing.errors import require_stripe, webhook_errors
from services.billing.states import PROVIDER, subscription_state
from services.billing.stripe_objects import CheckoutSession, StripeInvoice, StripeSubscription, timestamp
from services.credits import CreditService
from services.notices import Notice, send_notices
from services.notifications import NotificationService
from services.subscriptions import EPOCH, PlanChange, SubscriptionOwnedByOther, SubscriptionState
from storage.billing import BillingEventStore

# Named for the package: billing logs kept their logger name ("services.billing") through the split.
log = structlog.get_logger(__package__)
# Events of one subscription created in the same second (Stripe's clock ticks in seconds) apply in
# lifecycle order: created, then updated, then deleted.
TIE_BREAK = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.deleted": 2,
}


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
    notices: list[Notice] = field(default_factory=list)

    def clear(self) -> None:
        self.changes.clear()
        self.balances.clear()
        self.notices.clear()


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def _pack_notice(user_id: UUID, pack: str | None, credits: int, balance: int) -> Notice:
    data: dict[str, str | int] = {"event": "pack", "amount": credits, "balance": balance}
    if pack:  # Checkout always writes it; a session made elsewhere may not
        data["pack"] = pack
    body = f"Your balance is now {balance} credits."
    return Notice(user_id, "credits", f"{credits} credits added", body, data)


class StripeWebhooks(StripeArea):
    def __init__(
        self, deps: StripeDeps, *, credits: CreditService, notifications: NotificationService | None = None
    ) -> None:
        super().__init__(deps)
        self._credits = credits
        self._notifications = notifications
        self._events = BillingEventStore()
        self._handlers: dict[str, Callable[[asyncpg.Connection, StripeEvent, _Effects], Awaitable[str]]] = {
            "checkout.session.completed": self._checkout_completed,
            "checkout.session.async_payment_succeeded": self._checkout_completed,
            "customer.subscription.created": self._subscription_changed,
            "customer.subscription.updated": self._subscription_changed,
            "customer.subscription.deleted": self._subscription_changed,
            "invoice.paid": self._invoice,
            "invoice.payment_failed": self._invoice,
        }

    async def handle_webhook(self, payload: bytes, signature: str | None) -> WebhookResult:
        stripe = require_stripe(self._stripe)
        with webhook_errors():
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
        await send_notices(self._notifications, *effects.notices)
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
            effects.clear()
            log.warning("stripe event refused: it names a user who does not own the object", event_id=event.id)
            return "refused"

    async def _owner(
        self, conn: asyncpg.Connection, event: StripeEvent, customer_id: str | None, *claimed: str | None
    ) -> UUID | None:
        """The user who owns the Stripe customer. Every user id the object claims (metadata,
        client_reference_id) must be that user, else Refused. None: the customer is not ours."""
        owner = await self._customers.user_of(conn, customer_id) if customer_id else None
        if owner is None:
            log.warning("stripe event for a customer we do not know", event_id=event.id, customer=customer_id)
            return None
        for value in claimed:
            if value is not None and _uuid(value) != owner:
                log.warning(
                    "stripe event names another user than its customer's",
                    event_id=event.id,
                    customer=customer_id,
                    owner=str(owner),
                    claimed=value,
                )
                raise Refused
        return owner

    async def _checkout_completed(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        session = CheckoutSession.model_validate(event.object)
        session_id = session.id
        if not session_id or session.payment_status not in ("paid", "no_payment_required"):
            return "ignored"  # an asynchronous payment: checkout.session.async_payment_succeeded follows
        meta = session.metadata
        owner = await self._owner(conn, event, session.customer, meta.user_id, session.client_reference_id)
        if owner is None:
            return "ignored"
        plan = meta.paid_plan
        if session.mode == "subscription":
            period = meta.period
            if not session.subscription or period is None or period not in PERIODS:
                return "ignored"
            # Paid: entitled now. Stored at the epoch, so any customer.subscription.* event (which
            # carries the dates and the status) overrides it, whichever arrives first.
            state = SubscriptionState(PROVIDER, session.subscription, plan, period, "active", None, None, False, EPOCH)
            effects.changes.append(await self._subscriptions.apply_in(conn, owner, state))
            return "applied"
        if session.mode == "payment" and meta.kind == "lifetime":
            created = timestamp(event.created) or datetime.now(UTC)
            state = SubscriptionState(PROVIDER, session_id, plan, "lifetime", "active", None, None, False, created)
            effects.changes.append(await self._subscriptions.apply_in(conn, owner, state))
            return "applied"
        if session.mode == "payment" and meta.kind == "credits":
            credits = meta.credits
            if credits is None or credits <= 0:
                return "ignored"
            balance, applied = await self._credits.apply_in(
                conn,
                CreditChange(
                    user_id=owner,
                    delta=credits,
                    reason="purchase",
                    idempotency_key=f"stripe:{session_id}",
                    ref_type="stripe_checkout",
                    ref_id=session_id,
                ),
            )
            if applied:  # a new ledger entry: the one delivery of this pack (the key is the session)
                effects.balances.append((owner, balance))
                effects.notices.append(_pack_notice(owner, meta.pack, credits, balance))
                log.info("credits purchased", user_id=str(owner), credits=credits, session_id=session_id)
            return "applied"
        return "ignored"

    async def _subscription_changed(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        sub = StripeSubscription.model_validate(event.object)
        owner = await self._owner(conn, event, sub.customer, sub.metadata.user_id)
        if owner is None:
            return "ignored"
        created = timestamp(event.created) or datetime.now(UTC)
        state_at = created + timedelta(microseconds=TIE_BREAK.get(event.type, 0))
        state = subscription_state(sub, state_at=state_at, deleted=event.type == "customer.subscription.deleted")
        if state is None:
            return "ignored"
        change = await self._subscriptions.apply_in(conn, owner, state)
        effects.changes.append(change)
        if change is not None and change.subscription is None:
            log.info("stripe event older than the stored state", event_id=event.id)
        return "applied"

    async def _invoice(self, conn: asyncpg.Connection, event: StripeEvent, effects: _Effects) -> str:
        invoice = StripeInvoice.model_validate(event.object)
        details = invoice.parent.subscription_details
        owner = await self._owner(conn, event, invoice.customer, details.metadata.user_id)
        if owner is None or not invoice.id:
            return "ignored"
        paid = event.type == "invoice.paid"
        period_ends = [line.period.end for line in invoice.lines if line.period.end is not None]
        created = timestamp(event.created) or datetime.now(UTC)
        await self._invoices.upsert(
            conn,
            id=invoice.id,
            user_id=owner,
            subscription_id=details.subscription or invoice.subscription,
            amount_cents=invoice.amount_paid if paid else invoice.amount_due,
            currency=(invoice.currency or self._settings.billing_currency).lower(),
            status="paid" if paid else "payment_failed",
            hosted_url=invoice.hosted_invoice_url,
            period_end=max(period_ends) if period_ends else invoice.period_end,
            created_at=invoice.created or created,
            state_at=created,
        )
        return "applied"
