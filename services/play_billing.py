"""PlayBillingService: Google Play subscriptions. The app sends the purchase token it got from Play
Billing; we read the purchase from the Play Developer API (never trusting the client), acknowledge it,
and store it as a `google_play` subscription. The scheduler re-reads subscriptions whose period ran out.

Play state → ours (docs/billing.md):
  ACTIVE → active (renewing) · CANCELED → active with cancel_at_period_end until expiry, then expired ·
  IN_GRACE_PERIOD, ON_HOLD (renewal failed) → in_grace until expiry + BILLING_GRACE_DAYS, then expired ·
  PAUSED → paused · PENDING → incomplete · EXPIRED, PENDING_PURCHASE_CANCELED → expired.
An ACTIVE purchase whose expiry has passed (no renewal seen) is a failed renewal too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from core.entities import Principal, Subscription
from core.errors import AppError, Conflict, Unavailable, ValidationFailed
from providers.google_play import GooglePlay, PlayError, PlayFailed, PlaySubscription, PlayTokenInvalid, PlayUnavailable
from services.billing.config import BillingSettings
from services.subscriptions import PlanChange, SubscriptionOwnedByOther, SubscriptionService, SubscriptionState
from storage.subscriptions import ENTITLED, SubscriptionStore

log = structlog.get_logger(__name__)
PROVIDER = "google_play"
# Purchases in these states are acknowledged (Google refunds unacknowledged ones after 3 days).
ACKNOWLEDGEABLE = {
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_IN_GRACE_PERIOD",
    "SUBSCRIPTION_STATE_ON_HOLD",
    "SUBSCRIPTION_STATE_CANCELED",
}


@contextmanager
def play_call_errors() -> Iterator[None]:
    """Around a call to Google Play: unreachable (or our credentials refused) is 503, an error 502."""
    try:
        yield
    except PlayUnavailable as err:
        raise Unavailable(str(err), code="billing_unavailable") from err
    except PlayFailed as err:
        raise AppError(str(err), code="billing_provider_error", status=502) from err


def play_state(
    purchase: PlaySubscription,
    *,
    token: str,
    plan: str,
    period: str,
    now: datetime,
    grace: timedelta,
) -> SubscriptionState:
    expiry = purchase.expiry
    state = SubscriptionState(
        provider=PROVIDER,
        external_id=token,
        plan=plan,
        period=period,
        status="expired",
        current_period_end=expiry,
        grace_until=None,
        cancel_at_period_end=not purchase.auto_renewing,
        state_at=now,
    )

    def renewal_failed() -> SubscriptionState:
        if expiry is None:
            return state
        grace_until = expiry + grace
        return replace(state, status="in_grace" if now < grace_until else "expired", grace_until=grace_until)

    match purchase.state:
        case "SUBSCRIPTION_STATE_ACTIVE":
            if expiry is not None and expiry > now:
                return replace(state, status="active")
            return state if state.cancel_at_period_end else renewal_failed()
        case "SUBSCRIPTION_STATE_CANCELED":
            alive = expiry is not None and expiry > now
            return replace(state, status="active" if alive else "expired", cancel_at_period_end=True)
        case "SUBSCRIPTION_STATE_IN_GRACE_PERIOD" | "SUBSCRIPTION_STATE_ON_HOLD":
            return replace(renewal_failed(), cancel_at_period_end=False)
        case "SUBSCRIPTION_STATE_PAUSED":
            return replace(state, status="paused")
        case "SUBSCRIPTION_STATE_PENDING":
            return replace(state, status="incomplete")
        case _:  # EXPIRED, PENDING_PURCHASE_CANCELED, UNSPECIFIED
            return state


class PlayBillingService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: BillingSettings,
        play: GooglePlay | None,
        subscriptions: SubscriptionService,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._play = play
        self._subscriptions = subscriptions
        self._store = SubscriptionStore()

    @property
    def enabled(self) -> bool:
        return self._play is not None

    def products(self) -> dict[str, str]:
        return dict(self._settings.play_products) if self._play is not None else {}

    def _require_play(self) -> GooglePlay:
        if self._play is None:
            raise Unavailable(
                "Google Play billing is not configured on this server (PLAY_PACKAGE_NAME, PLAY_PRODUCTS)",
                code="billing_disabled",
            )
        return self._play

    async def verify(self, user: Principal, *, product_id: str, purchase_token: str) -> Subscription:
        play = self._require_play()
        period = self._settings.play_products.get(product_id)
        if period is None:
            raise ValidationFailed(
                f"product_id: {product_id!r} is not a product sold here",
                code="unknown_product",
                details=[{"field": "product_id", "message": "unknown product"}],
            )
        async with self._pool.acquire() as conn:
            existing = await self._store.by_external(conn, PROVIDER, purchase_token)
        if existing is not None and existing.user_id != user.id:
            log.warning("play purchase token of another user", user_id=str(user.id))
            raise Conflict("this purchase belongs to another account", code="purchase_token_in_use")
        try:
            with play_call_errors():
                purchase = await play.get_subscription(purchase_token)
        except PlayTokenInvalid as err:
            raise ValidationFailed(
                "purchase_token: Google Play does not know this purchase",
                code="invalid_purchase_token",
                details=[{"field": "purchase_token", "message": "unknown to Google Play"}],
            ) from err
        if product_id not in {item.product_id for item in purchase.line_items}:
            raise ValidationFailed(
                "product_id: the purchase is for another product",
                code="product_mismatch",
                details=[{"field": "product_id", "message": "does not match the purchase"}],
            )
        now = datetime.now(UTC)
        state = play_state(
            purchase, token=purchase_token, plan="premium", period=period, now=now, grace=self._settings.grace
        )
        if not purchase.acknowledged and purchase.state in ACKNOWLEDGEABLE:
            # Before storing: if this fails the client retries verify, and nothing was granted yet.
            with play_call_errors():
                await play.acknowledge(product_id=product_id, purchase_token=purchase_token)
            log.info("play purchase acknowledged", user_id=str(user.id), product_id=product_id)
        changes: list[PlanChange | None] = []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                changes.append(await self._subscriptions.apply_in(conn, user.id, state))
                if purchase.linked_purchase_token:
                    changes.append(await self._supersede(conn, user, purchase.linked_purchase_token, now))
                row = await self._store.by_external(conn, PROVIDER, purchase_token)
        except SubscriptionOwnedByOther as err:
            raise Conflict("this purchase belongs to another account", code="purchase_token_in_use") from err
        await self._subscriptions.announce(*changes)
        assert row is not None
        log.info("play subscription verified", user_id=str(user.id), status=row.status, product_id=product_id)
        return row

    async def _supersede(
        self, conn: asyncpg.Connection, user: Principal, old_token: str, now: datetime
    ) -> PlanChange | None:
        """An upgrade, downgrade or re-subscribe makes a new token linked to the old one: the old
        subscription (when it is this user's) ends, the new one carries on."""
        old = await self._store.by_external(conn, PROVIDER, old_token)
        if old is None or old.user_id != user.id or old.status not in ENTITLED:
            return None
        state = SubscriptionState(
            PROVIDER, old.external_id, old.plan, old.period, "expired", old.current_period_end, None, True, now
        )
        return await self._subscriptions.apply_in(conn, user.id, state)

    async def refresh(self, row: Subscription, now: datetime) -> SubscriptionState | None:
        """For the scheduler: the purchase as Google sees it now, or None when Google cannot be asked
        (then the stored dates decide)."""
        if self._play is None:
            return None
        try:
            purchase = await self._play.get_subscription(row.external_id)
        except PlayTokenInvalid:
            log.info("play no longer knows a purchase; the stored dates decide", subscription_id=str(row.id))
            return None
        except PlayError:
            return None
        return play_state(
            purchase, token=row.external_id, plan=row.plan, period=row.period, now=now, grace=self._settings.grace
        )
