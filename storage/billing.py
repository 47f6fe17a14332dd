"""Billing stores: the events already applied (exactly once), the invoices the webhooks record, and the
link between a user and their Stripe customer (users.stripe_customer_id)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import Invoice

RECORD_EVENT = """
INSERT INTO billing_events (provider, event_id, type) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING 1
"""
SET_EVENT_OUTCOME = "UPDATE billing_events SET outcome = $3 WHERE provider = $1 AND event_id = $2"
EVENT_OUTCOME = "SELECT outcome FROM billing_events WHERE provider = $1 AND event_id = $2"
PRUNE_EVENTS = "DELETE FROM billing_events WHERE received_at < $1"

CUSTOMER_OF_USER = "SELECT stripe_customer_id FROM users WHERE id = $1"
USER_OF_CUSTOMER = "SELECT id FROM users WHERE stripe_customer_id = $1"
# Keeps the first customer stored: two concurrent checkouts of one user end up on the same customer.
LINK_CUSTOMER = """
UPDATE users SET stripe_customer_id = COALESCE(stripe_customer_id, $2), updated_at = now()
WHERE id = $1
RETURNING stripe_customer_id
"""

_INVOICE_COLUMNS = "id, user_id, subscription_id, amount_cents, currency, status, hosted_url, period_end, created_at"
# Same ordering rule as subscriptions: an older event never overwrites a newer one, and once an
# invoice is paid a late `payment_failed` (of an earlier attempt) never turns it back. The row never
# moves to another user.
UPSERT_INVOICE = f"""
INSERT INTO invoices (id, user_id, subscription_id, amount_cents, currency, status, hosted_url, period_end,
                      created_at, state_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET
    subscription_id = COALESCE(EXCLUDED.subscription_id, invoices.subscription_id),
    amount_cents = EXCLUDED.amount_cents, currency = EXCLUDED.currency, status = EXCLUDED.status,
    hosted_url = COALESCE(EXCLUDED.hosted_url, invoices.hosted_url), period_end = EXCLUDED.period_end,
    state_at = EXCLUDED.state_at
WHERE invoices.user_id = EXCLUDED.user_id AND invoices.state_at <= EXCLUDED.state_at
  AND (invoices.status <> 'paid' OR EXCLUDED.status = 'paid')
RETURNING {_INVOICE_COLUMNS}
"""
INVOICE_PAGE = f"""
SELECT {_INVOICE_COLUMNS} FROM invoices
WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
ORDER BY created_at DESC, id DESC LIMIT $4
"""


class BillingEventStore:
    async def record(self, conn: asyncpg.Connection, *, provider: str, event_id: str, type: str) -> bool:
        """False when the event was already recorded (a retry). Call it inside the transaction that
        applies the event: a failed application rolls the record back, and the retry applies it."""
        return await conn.fetchval(RECORD_EVENT, provider, event_id, type) is not None

    async def set_outcome(self, conn: asyncpg.Connection, *, provider: str, event_id: str, outcome: str) -> None:
        await conn.execute(SET_EVENT_OUTCOME, provider, event_id, outcome)

    async def outcome(self, conn: asyncpg.Connection, *, provider: str, event_id: str) -> str | None:
        value = await conn.fetchval(EVENT_OUTCOME, provider, event_id)
        return str(value) if value is not None else None

    async def prune(self, conn: asyncpg.Connection, *, before: datetime) -> int:
        return _count(await conn.execute(PRUNE_EVENTS, before))


class StripeCustomerStore:
    async def customer_of(self, conn: asyncpg.Connection, user_id: UUID) -> str | None:
        value = await conn.fetchval(CUSTOMER_OF_USER, user_id)
        return str(value) if value is not None else None

    async def user_of(self, conn: asyncpg.Connection, customer_id: str) -> UUID | None:
        value = await conn.fetchval(USER_OF_CUSTOMER, customer_id)
        return value if isinstance(value, UUID) else None

    async def link(self, conn: asyncpg.Connection, user_id: UUID, customer_id: str) -> str | None:
        """Store the user's customer unless they already have one; returns the one stored (None: no
        such user). Raises asyncpg.UniqueViolationError when the customer belongs to another user."""
        value = await conn.fetchval(LINK_CUSTOMER, user_id, customer_id)
        return str(value) if value is not None else None


class InvoiceStore:
    async def upsert(
        self,
        conn: asyncpg.Connection,
        *,
        id: str,
        user_id: UUID,
        subscription_id: str | None,
        amount_cents: int,
        currency: str,
        status: str,
        hosted_url: str | None,
        period_end: datetime | None,
        created_at: datetime,
        state_at: datetime,
    ) -> Invoice | None:
        """None when a newer state is already stored (or the invoice belongs to someone else)."""
        record = await conn.fetchrow(
            UPSERT_INVOICE,
            id,
            user_id,
            subscription_id,
            amount_cents,
            currency,
            status,
            hosted_url,
            period_end,
            created_at,
            state_at,
        )
        return Invoice(**dict(record)) if record else None

    async def page(
        self, conn: asyncpg.Connection, user_id: UUID, *, before: tuple[datetime, str] | None, limit: int
    ) -> list[Invoice]:
        created, invoice_id = before if before is not None else (None, None)
        records = await conn.fetch(INVOICE_PAGE, user_id, created, invoice_id, limit)
        return [Invoice(**dict(r)) for r in records]


def _count(status: str) -> int:
    """Rows touched, from a command tag such as 'DELETE 12'."""
    return int(status.rsplit(" ", 1)[-1])
