"""Billing configuration: prices, credit packs, Google Play products, grace and the scheduler's intervals,
as a plain frozen object the billing services take. The server's settings (which read the environment,
every variable documented in docs/billing.md) include these fields and make this object; the Stripe
keys themselves stay with the server (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Period = Literal["daily", "monthly", "yearly", "lifetime"]
PERIODS: tuple[Period, ...] = ("daily", "monthly", "yearly", "lifetime")
# The plans sold (SPEC §6): `free` costs nothing; `premium` is sold in every period above.
PAID_PLANS = ("premium",)


@dataclass(frozen=True)
class CreditPack:
    name: str
    credits: int
    price_cents: int
    currency: str


@dataclass(frozen=True)
class PremiumPrice:
    period: Period
    amount_cents: int
    currency: str
    stripe_price: str | None  # a Stripe Price id to use instead of an inline price


def parse_credit_packs(spec: str, currency: str) -> list[CreditPack]:
    """`name:credits:price_cents,...` → packs, in the order given."""
    packs: list[CreditPack] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        fields = [f.strip() for f in item.split(":")]
        if len(fields) != 3 or not fields[0]:
            raise ValueError(f"credit pack {item!r}: expected name:credits:price_cents")
        try:
            credits, price = int(fields[1]), int(fields[2])
        except ValueError as err:
            raise ValueError(f"credit pack {item!r}: credits and price_cents must be integers") from err
        if credits <= 0 or price <= 0:
            raise ValueError(f"credit pack {item!r}: credits and price_cents must be positive")
        if any(p.name == fields[0] for p in packs):
            raise ValueError(f"credit pack {fields[0]!r} is listed twice")
        packs.append(CreditPack(fields[0], credits, price, currency))
    return packs


def parse_play_products(spec: str) -> dict[str, Period]:
    """`product_id:period,...` → {product_id: period}."""
    products: dict[str, Period] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        product, _, period = (f.strip() for f in item.partition(":"))
        if not product or period not in PERIODS:
            raise ValueError(f"play product {item!r}: expected product_id:daily|monthly|yearly|lifetime")
        products[product] = period  # type: ignore[assignment]
    return products


class BillingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    billing_currency: str = Field(default="usd", min_length=3, max_length=3)
    premium_price_daily_cents: int = Field(default=199, gt=0)
    premium_price_monthly_cents: int = Field(default=999, gt=0)
    premium_price_yearly_cents: int = Field(default=7999, gt=0)
    premium_price_lifetime_cents: int = Field(default=19999, gt=0)
    # Stripe Price ids (price_...); when set, Checkout uses them instead of the inline prices above.
    stripe_price_daily: str | None = None
    stripe_price_monthly: str | None = None
    stripe_price_yearly: str | None = None
    stripe_price_lifetime: str | None = None
    credit_packs_spec: str = Field(
        default="starter:50:499,standard:200:1499,pro:1000:5999", validation_alias="credit_packs"
    )
    # Where Stripe sends the user back. {CHECKOUT_SESSION_ID} is filled in by Stripe.
    billing_success_url: str = "http://127.0.0.1:8080/?checkout=success&session_id={CHECKOUT_SESSION_ID}"
    billing_cancel_url: str = "http://127.0.0.1:8080/?checkout=cancel"
    billing_portal_return_url: str = "http://127.0.0.1:8080/"
    # A failed renewal keeps the plan this long past the paid period (Google Play; SPEC §6).
    billing_grace_days: float = Field(default=3, ge=0)
    # Safety net for lost webhooks: a Stripe subscription this long past its period end is expired.
    stripe_expire_after_days: float = Field(default=7, ge=0)

    play_package_name: str | None = None
    play_products_spec: str = Field(default="", validation_alias="play_products")
    # Service-account JSON for the Play Developer API (falls back to FIREBASE_CREDENTIALS).
    play_credentials: Path | None = None
    # A fixed bearer token instead of a service account (tests, or a proxy that adds the real one).
    play_access_token: SecretStr | None = None
    play_api_base: str = "https://androidpublisher.googleapis.com"
    play_timeout_seconds: float = Field(default=15, gt=0)

    scheduler_enabled: bool = True
    job_subscriptions_seconds: float = Field(default=300, gt=0)
    job_history_cleanup_seconds: float = Field(default=3600, gt=0)
    job_housekeeping_seconds: float = Field(default=86400, gt=0)
    job_file_sweep_seconds: float = Field(default=3600, gt=0)
    # Expiry of background jobs' results (their files and links) past JOB_RESULT_TTL_HOURS.
    job_results_seconds: float = Field(default=3600, gt=0)
    usage_retention_days: int = Field(default=400, ge=1)
    billing_events_retention_days: int = Field(default=400, ge=1)
    job_runs_retention_days: int = Field(default=30, ge=1)

    @field_validator(
        "stripe_price_daily",
        "stripe_price_monthly",
        "stripe_price_yearly",
        "stripe_price_lifetime",
        "play_package_name",
        "play_credentials",
        "play_access_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("credit_packs_spec")
    @classmethod
    def _valid_packs(cls, value: str) -> str:
        parse_credit_packs(value, "usd")
        return value

    @field_validator("play_products_spec")
    @classmethod
    def _valid_products(cls, value: str) -> str:
        parse_play_products(value)
        return value

    @cached_property
    def credit_packs(self) -> list[CreditPack]:
        return parse_credit_packs(self.credit_packs_spec, self.billing_currency.lower())

    def credit_pack(self, name: str) -> CreditPack | None:
        return next((p for p in self.credit_packs if p.name == name), None)

    @cached_property
    def premium_prices(self) -> dict[Period, PremiumPrice]:
        currency = self.billing_currency.lower()
        return {
            "daily": PremiumPrice("daily", self.premium_price_daily_cents, currency, self.stripe_price_daily),
            "monthly": PremiumPrice("monthly", self.premium_price_monthly_cents, currency, self.stripe_price_monthly),
            "yearly": PremiumPrice("yearly", self.premium_price_yearly_cents, currency, self.stripe_price_yearly),
            "lifetime": PremiumPrice(
                "lifetime", self.premium_price_lifetime_cents, currency, self.stripe_price_lifetime
            ),
        }

    @cached_property
    def play_products(self) -> dict[str, Period]:
        return parse_play_products(self.play_products_spec)

    @property
    def grace(self) -> timedelta:
        return timedelta(days=self.billing_grace_days)
