"""SubscriptionStore: subscriptions from Stripe, Google Play or an admin, and the user's plan derived
from them. The plan is never set directly: change a subscription, then `recompute_plan`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from core.entities import Subscription

_COLUMNS = (
    "id, user_id, provider, external_id, plan, period, status, current_period_end, grace_until,"
    " cancel_at_period_end, state_at, created_at, updated_at"
)
# Statuses that grant the subscription's plan (past_due: the store is still retrying the payment).
ENTITLED = ("active", "past_due", "in_grace")

UPSERT = f"""
INSERT INTO subscriptions (user_id, provider, external_id, plan, period, status, current_period_end,
                           grace_until, cancel_at_period_end, state_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (provider, external_id) DO UPDATE SET
    plan = EXCLUDED.plan, period = EXCLUDED.period, status = EXCLUDED.status,
    current_period_end = EXCLUDED.current_period_end, grace_until = EXCLUDED.grace_until,
    cancel_at_period_end = EXCLUDED.cancel_at_period_end, state_at = EXCLUDED.state_at, updated_at = now()
WHERE subscriptions.state_at <= EXCLUDED.state_at   -- an older event never overwrites a newer state
RETURNING {_COLUMNS}
"""
BY_EXTERNAL = f"SELECT {_COLUMNS} FROM subscriptions WHERE provider = $1 AND external_id = $2"
FOR_USER = f"SELECT {_COLUMNS} FROM subscriptions WHERE user_id = $1 ORDER BY created_at DESC"
BY_ID_FOR_UPDATE = f"SELECT {_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE"
# Locks the user row: every plan change of one user runs one at a time (webhooks, Play, the scheduler).
LOCK_USER_PLAN = "SELECT plan FROM users WHERE id = $1 FOR UPDATE"
# Entitled subscriptions whose time ran out: in_grace ones past grace_until, the others past
# current_period_end; Stripe ones only once they are past $3 (Stripe's webhooks are the source of
# truth, this is a safety net).
DUE = f"""
SELECT {_COLUMNS} FROM subscriptions
WHERE status = ANY($1::text[]) AND current_period_end IS NOT NULL
  AND CASE WHEN status = 'in_grace' THEN COALESCE(grace_until, current_period_end) ELSE current_period_end END
      < CASE WHEN provider = 'stripe' THEN $3::timestamptz ELSE $2::timestamptz END
ORDER BY current_period_end LIMIT $4
"""
RECOMPUTE_PLAN = """
UPDATE users SET plan = COALESCE(
    (SELECT s.plan FROM subscriptions s
     WHERE s.user_id = $1 AND s.status = ANY($2::text[])
     ORDER BY CASE s.plan WHEN 'premium' THEN 0 ELSE 1 END LIMIT 1), 'free'),
    updated_at = now()
WHERE id = $1
RETURNING plan
"""


class SubscriptionStore:
    async def upsert(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: UUID,
        provider: str,
        external_id: str,
        plan: str,
        period: str,
        status: str,
        current_period_end: datetime | None,
        grace_until: datetime | None,
        cancel_at_period_end: bool,
        state_at: datetime,
    ) -> Subscription | None:
        """None when a newer state is already stored (the event was older)."""
        record = await conn.fetchrow(
            UPSERT,
            user_id,
            provider,
            external_id,
            plan,
            period,
            status,
            current_period_end,
            grace_until,
            cancel_at_period_end,
            state_at,
        )
        return Subscription(**dict(record)) if record else None

    async def by_external(self, conn: asyncpg.Connection, provider: str, external_id: str) -> Subscription | None:
        record = await conn.fetchrow(BY_EXTERNAL, provider, external_id)
        return Subscription(**dict(record)) if record else None

    async def for_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[Subscription]:
        return [Subscription(**dict(r)) for r in await conn.fetch(FOR_USER, user_id)]

    async def lock(self, conn: asyncpg.Connection, subscription_id: UUID) -> Subscription | None:
        record = await conn.fetchrow(BY_ID_FOR_UPDATE, subscription_id)
        return Subscription(**dict(record)) if record else None

    async def lock_user_plan(self, conn: asyncpg.Connection, user_id: UUID) -> str | None:
        """The user's plan, with the user row locked until the transaction ends; None for no such user."""
        plan = await conn.fetchval(LOCK_USER_PLAN, user_id)
        return str(plan) if plan is not None else None

    async def due(
        self, conn: asyncpg.Connection, *, now: datetime, stripe_before: datetime, limit: int
    ) -> list[Subscription]:
        """Entitled subscriptions whose period (or grace) ended before `now` (`stripe_before` for Stripe)."""
        records = await conn.fetch(DUE, list(ENTITLED), now, stripe_before, limit)
        return [Subscription(**dict(r)) for r in records]

    async def recompute_plan(self, conn: asyncpg.Connection, user_id: UUID) -> str:
        """Set the user's plan from their entitled subscriptions ('free' without one); returns it."""
        return str(await conn.fetchval(RECOMPUTE_PLAN, user_id, list(ENTITLED)))
