"""How a Stripe subscription maps onto ours: its status, its period and when the paid period ends."""

from __future__ import annotations

from datetime import datetime

from services.billing.config import PERIODS, Period
from services.billing.stripe_objects import Recurring, StripeSubscription
from services.subscriptions import SubscriptionState

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


def subscription_state(
    sub: StripeSubscription, *, state_at: datetime, deleted: bool = False
) -> SubscriptionState | None:
    """Our state of a Stripe subscription, seen at `state_at`; None when it has no id or a status we
    do not know."""
    status = "canceled" if deleted else STRIPE_STATUS.get(sub.status or "")
    if not sub.id or status is None:
        return None
    period = sub.metadata.period
    if period is None or period not in PERIODS or period == "lifetime":
        recurring = sub.items[0].price.recurring if sub.items else Recurring()
        period = INTERVAL_PERIOD.get(recurring.interval or "", "monthly")
    ends = [item.current_period_end for item in sub.items if item.current_period_end is not None]
    return SubscriptionState(
        provider=PROVIDER,
        external_id=sub.id,
        plan=sub.metadata.paid_plan,
        period=period,
        status=status,
        current_period_end=max(ends) if ends else sub.current_period_end,
        grace_until=None,
        cancel_at_period_end=sub.cancel_at_period_end,
        state_at=state_at,
    )
