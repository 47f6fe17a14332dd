"""What both Stripe services stand on: the pool, the billing settings, the Stripe client (None while
STRIPE_SECRET_KEY is unset), the subscription service and the stores of customers and invoices."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from providers.stripe_billing import StripeBilling
from services.billing.config import BillingSettings
from services.subscriptions import SubscriptionService
from storage.billing import InvoiceStore, StripeCustomerStore


@dataclass(frozen=True)
class StripeDeps:
    pool: asyncpg.Pool
    settings: BillingSettings
    stripe: StripeBilling | None
    subscriptions: SubscriptionService


class StripeArea:
    def __init__(self, deps: StripeDeps) -> None:
        self._pool = deps.pool
        self._settings = deps.settings
        self._stripe = deps.stripe
        self._subscriptions = deps.subscriptions
        self._customers = StripeCustomerStore()
        self._invoices = InvoiceStore()
