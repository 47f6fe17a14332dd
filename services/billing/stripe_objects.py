"""Typed views of the Stripe objects the webhook engine reads (a Checkout Session, a subscription, an
invoice), parsed once from the event's `data.object`, holding only the fields used.

Stripe's objects are read leniently, the way the engine always read them: a field of the wrong type
counts as absent (an id that is not a string is no id, a `metadata` that is not an object is empty),
and a reference is the id whether Stripe sent the id or the expanded object. Values that cannot be
used at all (a non-numeric amount, a timestamp out of range) fail validation: like any other
exception in the engine, a 500 that Stripe retries, and nothing recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from services.billing.config import PAID_PLANS

T = TypeVar("T")


def timestamp(value: Any) -> datetime | None:
    """Unix seconds (Stripe's clock) → UTC; absent, zero or not a number → None."""
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) and value > 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ref(value: Any) -> str | None:
    """An object reference: Stripe sends the id, or the object itself when expanded."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _claim(value: Any) -> str | None:
    """A user id the object claims: None when it claims none; anything else is compared as text."""
    return None if value is None or value == "" else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_data(value: Any) -> list[dict[str, Any]]:
    """The objects of a Stripe list (`{"object": "list", "data": [...]}`)."""
    data = value.get("data") if isinstance(value, dict) else None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _usable(convert: Callable[[Any], T]) -> Callable[[Any], T]:
    """`convert`, with the errors of a value it cannot take at all (None or a list where a number
    belongs, a timestamp past year 9999) turned into a validation error."""

    def validate(value: Any) -> T:
        try:
            return convert(value)
        except (TypeError, OverflowError, OSError) as err:
            raise ValueError(f"unusable value: {err}") from err

    return validate


def _credits(value: Any) -> int | None:
    """The pack's credits, as Checkout wrote them; text that is not a whole number → None."""
    try:
        return int(value)
    except ValueError:
        return None


def _amount(value: Any) -> int:
    return int(value or 0)


def _currency(value: Any) -> str | None:
    return str(value) if value else None


Text = Annotated[str | None, BeforeValidator(_text)]
Ref = Annotated[str | None, BeforeValidator(_ref)]
Claim = Annotated[str | None, BeforeValidator(_claim)]
Timestamp = Annotated[datetime | None, BeforeValidator(_usable(timestamp))]
Amount = Annotated[int, BeforeValidator(_usable(_amount))]
Flag = Annotated[bool, BeforeValidator(bool)]


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Metadata(_View):
    """What Parlor's Checkout wrote into `metadata` (and Stripe copied onto the subscription)."""

    user_id: Claim = None
    kind: Text = None  # subscription | lifetime | credits
    plan: Text = None
    period: Text = None
    pack: Text = None  # a credit pack's name
    credits: Annotated[int | None, BeforeValidator(_usable(_credits))] = None

    @property
    def paid_plan(self) -> str:
        """The plan named, when it is one we sell; premium otherwise."""
        return self.plan if self.plan is not None and self.plan in PAID_PLANS else "premium"


MetadataField = Annotated[Metadata, BeforeValidator(_mapping)]


class CheckoutSession(_View):
    id: Text = None
    mode: Text = None  # subscription | payment
    payment_status: Text = None
    customer: Ref = None
    client_reference_id: Claim = None
    subscription: Ref = None
    metadata: MetadataField = Field(default_factory=Metadata)


class Recurring(_View):
    interval: Text = None  # day | week | month | year


class Price(_View):
    recurring: Annotated[Recurring, BeforeValidator(_mapping)] = Field(default_factory=Recurring)


class SubscriptionItem(_View):
    price: Annotated[Price, BeforeValidator(_mapping)] = Field(default_factory=Price)
    current_period_end: Timestamp = None


class StripeSubscription(_View):
    id: Text = None
    status: Text = None
    customer: Ref = None
    metadata: MetadataField = Field(default_factory=Metadata)
    items: Annotated[tuple[SubscriptionItem, ...], BeforeValidator(_list_data)] = ()
    # Current API versions keep the period on the items; older ones here.
    current_period_end: Timestamp = None
    cancel_at_period_end: Flag = False


class LinePeriod(_View):
    end: Timestamp = None


class InvoiceLine(_View):
    period: Annotated[LinePeriod, BeforeValidator(_mapping)] = Field(default_factory=LinePeriod)


class SubscriptionDetails(_View):
    subscription: Ref = None
    metadata: MetadataField = Field(default_factory=Metadata)


class InvoiceParent(_View):
    subscription_details: Annotated[SubscriptionDetails, BeforeValidator(_mapping)] = Field(
        default_factory=SubscriptionDetails
    )


class StripeInvoice(_View):
    id: Text = None
    customer: Ref = None
    # Current API versions name the subscription under parent.subscription_details; older ones here.
    subscription: Ref = None
    parent: Annotated[InvoiceParent, BeforeValidator(_mapping)] = Field(default_factory=InvoiceParent)
    amount_paid: Amount = 0
    amount_due: Amount = 0
    currency: Annotated[str | None, BeforeValidator(_currency)] = None
    hosted_invoice_url: Text = None
    lines: Annotated[tuple[InvoiceLine, ...], BeforeValidator(_list_data)] = ()
    period_end: Timestamp = None
    created: Timestamp = None
