"""SubscriptionService: every change to a subscription, from Stripe, Google Play, an admin or the
scheduler, goes through `apply_in`: lock the user, upsert the subscription (an older state never
overwrites a newer one), recompute the user's plan, all in the caller's transaction. After commit,
`announce` emits `plan {plan}` to the user when their plan changed and sends the `subscription`
notification of what the change did to the subscription (renewed, in grace, expired)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import Subscription, SubscriptionState
from core.errors import AppError, NotFound
from core.events import Events, PlanEvent
from services.billing.config import BillingSettings
from services.credits import CreditService
from services.notices import Notice, day, iso, send_notices
from services.notifications import NotificationService
from storage.subscriptions import ENTITLED, SubscriptionStore
from storage.users import UserStore

log = structlog.get_logger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Subscriptions the expiry job handles per run; the rest wait for the next run.
DUE_BATCH = 500


@dataclass(frozen=True)
class PlanChange:
    user_id: UUID
    before: str
    after: str
    subscription: Subscription | None  # None: the state was older than the one stored
    # The subscription as stored before this change (None: new). Notifications compare the two, so a
    # replayed or repeated state, which stores nothing new, notifies nobody.
    previous: Subscription | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class SubscriptionStatus:
    plan: str
    subscriptions: list[Subscription]  # the entitled ones
    credits: int


# Entitled, but the last payment failed: the store retries (past_due) or Play's grace runs (in_grace).
PAYMENT_TROUBLE = ("past_due", "in_grace")
ENDED = ("expired", "canceled")
# Renewed by a store payment ("Premium renewed"); an admin's grant is not paid for.
PAID_PROVIDERS = ("stripe", "google_play")


def subscription_notice(change: PlanChange) -> Notice | None:
    """The `subscription` notification a committed change calls for, from the stored state before and
    after it: renewed, grace (a payment failed, still entitled) or expired (no longer entitled, and the
    user lost its plan). None for anything else. Each needs the stored state to have moved (a later period
    end, another status), so a state stored already (a replayed event, a repeated verify, an older event
    that stored nothing) notifies nobody: exactly once per change, as the user row lock orders them."""
    prev, sub = change.previous, change.subscription
    if sub is None:
        return None
    plan, name, end = sub.plan, sub.plan.capitalize(), sub.current_period_end
    data: dict[str, str | int] = {"plan": plan}
    if prev is not None and end is not None and _renewed(prev, sub):
        data |= {"event": "renewed", "period_end": iso(end)}
        return Notice(change.user_id, "subscription", f"{name} renewed", f"Paid until {day(end)}.", data)
    if sub.status in PAYMENT_TROUBLE and (prev is None or prev.status not in PAYMENT_TROUBLE):
        data["event"] = "grace"
        until = "while the payment is retried"  # Stripe's past_due: it retries on its own schedule, no date
        if sub.grace_until is not None:
            data["grace_until"] = iso(sub.grace_until)
            until = f"until {day(sub.grace_until)}"
        body = f"{name} continues {until}. Please check your payment method."
        return Notice(change.user_id, "subscription", "Payment problem", body, data)
    # Not when another subscription keeps the plan (a Play upgrade ends the old token, an admin grant).
    if prev is not None and prev.status in ENTITLED and sub.status in ENDED and change.after != plan:
        data["event"] = "expired"
        if end is not None:
            data["period_end"] = iso(end)
        body = f"You are on the {change.after} plan now."
        return Notice(change.user_id, "subscription", f"{name} ended", body, data)
    return None


def _renewed(prev: Subscription, sub: Subscription) -> bool:
    """Paid for another period: the period end moved forward while entitled, or a failed payment went
    through at last (Stripe moves the period end forward already when the renewal falls past_due)."""
    if sub.provider not in PAID_PROVIDERS or sub.status != "active" or prev.status not in ENTITLED:
        return False
    if sub.current_period_end is None or prev.current_period_end is None:
        return False
    if prev.status in PAYMENT_TROUBLE:
        return sub.current_period_end >= prev.current_period_end
    return sub.current_period_end > prev.current_period_end


class SubscriptionOwnedByOther(Exception):
    """The subscription is stored for another user: nobody can move it to themselves."""


# Re-reads a due subscription from its provider: the fresh state, or None when the provider cannot
# tell (unreachable, not configured), in which case the stored dates decide.
Refresher = Callable[[Subscription, datetime], Awaitable[SubscriptionState | None]]


def lapsed_state(row: Subscription, now: datetime, grace: timedelta) -> SubscriptionState:
    """What an entitled subscription becomes when its time ran out and no renewal was seen. Google Play
    subscriptions that were meant to renew get the grace period (in_grace until period end + grace),
    then expire; the others (Stripe safety net, admin grants, cancelled ones) expire at once."""
    state = SubscriptionState(
        provider=row.provider,
        external_id=row.external_id,
        plan=row.plan,
        period=row.period,
        status="expired",
        current_period_end=row.current_period_end,
        grace_until=row.grace_until,
        cancel_at_period_end=row.cancel_at_period_end,
        state_at=max(datetime.now(UTC), row.state_at),
    )
    if row.provider != "google_play" or row.cancel_at_period_end or row.current_period_end is None:
        return state
    grace_until = row.grace_until if row.status == "in_grace" and row.grace_until else row.current_period_end + grace
    return replace(state, status="in_grace" if now < grace_until else "expired", grace_until=grace_until)


class SubscriptionService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        events: Events,
        credits: CreditService,
        settings: BillingSettings,
        notifications: NotificationService | None = None,
    ) -> None:
        self._pool = pool
        self._events = events
        self._notifications = notifications
        self._credits = credits
        self._settings = settings
        self._store = SubscriptionStore()
        self._users = UserStore()
        self._refreshers: dict[str, Refresher] = {}

    def on_due(self, provider: str, refresher: Refresher) -> None:
        """Ask `refresher` for the fresh state of `provider`'s subscriptions when they come due."""
        self._refreshers[provider] = refresher

    async def apply_in(self, conn: asyncpg.Connection, user_id: UUID, state: SubscriptionState) -> PlanChange | None:
        """Inside the caller's transaction. None when the user does not exist. Raises
        SubscriptionOwnedByOther when the subscription is stored for another user; the caller must
        then roll its transaction (or a savepoint around this call) back."""
        before = await self._store.lock_user_plan(conn, user_id)
        if before is None:
            return None
        existing = await self._store.by_external(conn, state.provider, state.external_id)
        if existing is not None and existing.user_id != user_id:
            raise SubscriptionOwnedByOther
        row = await self._store.upsert(
            conn,
            user_id=user_id,
            provider=state.provider,
            external_id=state.external_id,
            plan=state.plan,
            period=state.period,
            status=state.status,
            current_period_end=state.current_period_end,
            grace_until=state.grace_until,
            cancel_at_period_end=state.cancel_at_period_end,
            state_at=state.state_at,
        )
        if row is None:
            # Nothing written: a newer state is stored. Whose? Another user's verify may have inserted
            # it meanwhile (after our by_external read), with a later state_at than ours.
            row = await self._store.by_external(conn, state.provider, state.external_id)
        if row is not None and row.user_id != user_id:  # inserted by another user's transaction meanwhile
            raise SubscriptionOwnedByOther
        after = await self._store.recompute_plan(conn, user_id)
        return PlanChange(user_id=user_id, before=before, after=after, subscription=row, previous=existing)

    async def announce(self, *changes: PlanChange | None) -> None:
        """After commit: `plan {plan}` to each user whose plan changed (their last change only), then the
        `subscription` notification of each change that calls for one (best effort, never raises)."""
        latest: dict[UUID, PlanChange] = {}
        first: dict[UUID, str] = {}
        for change in changes:
            if change is None:
                continue
            first.setdefault(change.user_id, change.before)
            latest[change.user_id] = change
        for user_id, change in latest.items():
            if change.after != first[user_id]:
                log.info("plan changed", user_id=str(user_id), plan=change.after, was=first[user_id])
                await self._events.to_user(user_id, PlanEvent(plan=change.after))
        notices = [subscription_notice(change) for change in changes if change is not None]
        await send_notices(self._notifications, *(n for n in notices if n is not None))

    async def apply(self, user_id: UUID, state: SubscriptionState) -> PlanChange | None:
        """`apply_in` in its own transaction, announced after commit."""
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self.apply_in(conn, user_id, state)
        await self.announce(change)
        return change

    async def set_admin_plan(self, user_id: UUID, *, plan: str, until: datetime | None = None) -> PlanChange:
        """An admin's grant (authorize and audit in the caller): `premium` until `until` (None: for
        good), or `free` to end the admin grant. Store subscriptions (Stripe, Play) are untouched, so
        a user who pays keeps premium. The plan follows, as always, from the subscriptions."""
        if plan not in ("free", "premium"):
            raise AppError(f"plan: unknown plan {plan!r}", code="invalid", status=422)
        state = SubscriptionState(
            provider="admin",
            external_id=f"admin:{user_id}",
            plan="premium",
            period="lifetime",
            status="active" if plan == "premium" else "canceled",
            current_period_end=until,
            grace_until=None,
            cancel_at_period_end=until is not None,
            state_at=datetime.now(UTC),
        )
        change = await self.apply(user_id, state)
        if change is None:
            raise NotFound("user not found")
        return change

    async def status(self, user_id: UUID) -> SubscriptionStatus:
        async with self._pool.acquire() as conn:
            subscriptions = await self._store.for_user(conn, user_id)
            user = await self._users.get(conn, user_id)
        if user is None:
            raise NotFound("user not found")
        entitled = [s for s in subscriptions if s.status in ENTITLED]
        return SubscriptionStatus(plan=user.plan, subscriptions=entitled, credits=await self._credits.balance(user_id))

    async def history(self, user_id: UUID) -> list[Subscription]:
        """Every subscription of the user, all providers, newest first."""
        async with self._pool.acquire() as conn:
            return await self._store.for_user(conn, user_id)

    async def expire_due(self, at: datetime) -> dict[str, Any]:
        """The scheduler's subscription job: every entitled subscription whose period (or grace) ended
        before `at` is re-read from its provider when one can tell, else moved on by its dates:
        renewed → active; renewal failed → in_grace (Play, until period end + grace); grace over or
        not renewing → expired. Plans are recomputed and announced."""
        stripe_before = at - timedelta(days=self._settings.stripe_expire_after_days)
        async with self._pool.acquire() as conn:
            due = await self._store.due(conn, now=at, stripe_before=stripe_before, limit=DUE_BATCH)
        counts = {"due": len(due), "active": 0, "in_grace": 0, "expired": 0, "other": 0, "skipped": 0}
        for row in due:
            state = None
            refresher = self._refreshers.get(row.provider)
            if refresher is not None:
                try:
                    state = await refresher(row, at)
                except AppError as err:  # unreachable or refused: the dates decide
                    log.warning("subscription re-check failed", provider=row.provider, code=err.code)
            if state is None:
                state = lapsed_state(row, at, self._settings.grace)
            change = await self._apply_due(row, state)
            if change is None:
                counts["skipped"] += 1
            else:
                key = state.status if state.status in counts else "other"
                counts[key] += 1
        return counts

    async def _apply_due(self, row: Subscription, state: SubscriptionState) -> PlanChange | None:
        async with self._pool.acquire() as conn, conn.transaction():
            if await self._store.lock_user_plan(conn, row.user_id) is None:
                return None
            current = await self._store.lock(conn, row.id)
            # Changed since we read it (a webhook, a verify): that newer state stands; next run sees it.
            if current is None or current.updated_at != row.updated_at:
                return None
            state = replace(state, state_at=max(datetime.now(UTC), current.state_at))
            change = await self.apply_in(conn, row.user_id, state)
        await self.announce(change)
        return change
