"""The typed views of Stripe's objects read what the webhook engine always read: ids or expanded
objects, wrong types as absent, missing fields as their defaults; values nothing could use fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from services.billing.states import subscription_state
from services.billing.stripe_objects import CheckoutSession, Metadata, StripeInvoice, StripeSubscription, timestamp

T0 = 1_700_000_000
AT = datetime(2026, 1, 2, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_reference_is_the_id_or_the_expanded_objects_id() -> None:
    assert CheckoutSession.model_validate({"customer": "cus_1"}).customer == "cus_1"
    assert CheckoutSession.model_validate({"customer": {"id": "cus_1", "email": "a@b.c"}}).customer == "cus_1"
    for missing in ("", None, 5, ["cus_1"], {"object": "customer"}, {"id": 7}):
        assert CheckoutSession.model_validate({"customer": missing}).customer is None


def test_a_malformed_session_reads_as_empty() -> None:
    session = CheckoutSession.model_validate(
        {"id": 5, "mode": ["payment"], "payment_status": True, "metadata": "user_id=1", "subscription": 3}
    )
    assert session == CheckoutSession()
    assert session.metadata == Metadata() and session.metadata.paid_plan == "premium"


def test_every_missing_field_has_its_default() -> None:
    assert CheckoutSession.model_validate({}) == CheckoutSession()
    sub = StripeSubscription.model_validate({})
    assert (sub.id, sub.items, sub.cancel_at_period_end, sub.current_period_end) == (None, (), False, None)
    invoice = StripeInvoice.model_validate({})
    assert (invoice.amount_paid, invoice.amount_due, invoice.currency, invoice.lines) == (0, 0, None, ())
    assert invoice.parent.subscription_details.metadata == Metadata()


def test_claimed_user_ids_absent_only_when_empty() -> None:
    user = str(uuid4())
    assert Metadata.model_validate({"user_id": user}).user_id == user
    assert Metadata.model_validate({"user_id": ""}).user_id is None
    assert Metadata.model_validate({"user_id": None}).user_id is None
    # Anything else is a claim, and one that matches nobody: the engine refuses the event.
    assert Metadata.model_validate({"user_id": 0}).user_id == "0"
    assert CheckoutSession.model_validate({"client_reference_id": False}).client_reference_id == "False"


def test_credits_are_a_whole_number_or_none() -> None:
    assert Metadata.model_validate({"credits": "50"}).credits == 50
    assert Metadata.model_validate({"credits": "lots"}).credits is None
    assert Metadata.model_validate({}).credits is None
    with pytest.raises(ValidationError):
        Metadata.model_validate({"credits": None})


def test_only_a_plan_we_sell_counts() -> None:
    assert Metadata.model_validate({"plan": "premium"}).paid_plan == "premium"
    assert Metadata.model_validate({"plan": "gold"}).paid_plan == "premium"
    assert Metadata.model_validate({"plan": 1}).plan is None


def test_lists_keep_their_objects_only() -> None:
    sub = StripeSubscription.model_validate({"items": {"data": ["si_1", {"current_period_end": T0}, 3]}})
    assert [item.current_period_end for item in sub.items] == [at(T0)]
    for not_a_list in (None, [], {"data": "x"}, {"data": {"0": {}}}):
        assert StripeSubscription.model_validate({"items": not_a_list}).items == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(T0, at(T0)), (float(T0), at(T0)), (0, None), (-5, None), ("1700000000", None), (None, None)],
)
def test_timestamps_are_positive_unix_seconds(value: Any, expected: datetime | None) -> None:
    assert timestamp(value) == expected
    assert StripeInvoice.model_validate({"created": value}).created == expected


@pytest.mark.parametrize(
    "invoice",
    [
        {"amount_paid": "a lot"},
        {"amount_due": [100]},
        {"created": 10**20},
        {"lines": {"data": [{"period": {"end": 10**20}}]}},
    ],
)
def test_values_nothing_can_use_fail_validation(invoice: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        StripeInvoice.model_validate(invoice)


def test_an_invoice_names_its_subscription_either_way() -> None:
    current = {"parent": {"subscription_details": {"subscription": "sub_new", "metadata": {"user_id": "u"}}}}
    invoice = StripeInvoice.model_validate({**current, "subscription": "sub_old"})
    details = invoice.parent.subscription_details
    assert (details.subscription, invoice.subscription, details.metadata.user_id) == ("sub_new", "sub_old", "u")
    assert StripeInvoice.model_validate({"amount_paid": "1200", "currency": ""}).amount_paid == 1200
    assert StripeInvoice.model_validate({"currency": ""}).currency is None


def subscription(**fields: Any) -> StripeSubscription:
    return StripeSubscription.model_validate({"id": "sub_1", "status": "active", **fields})


def test_a_subscription_state_takes_the_latest_item_period_end() -> None:
    items = {"data": [{"current_period_end": T0}, {"current_period_end": T0 + 60}]}
    state = subscription_state(subscription(items=items, current_period_end=T0 - 60), state_at=AT)
    assert state is not None and state.current_period_end == at(T0 + 60)
    older_api = subscription_state(subscription(current_period_end=T0 - 60), state_at=AT)
    assert older_api is not None and older_api.current_period_end == at(T0 - 60)


def test_the_period_comes_from_metadata_else_the_price() -> None:
    yearly = {"data": [{"price": {"recurring": {"interval": "year"}}}]}
    from_meta = subscription_state(subscription(metadata={"period": "daily"}, items=yearly), state_at=AT)
    from_price = subscription_state(subscription(metadata={"period": "lifetime"}, items=yearly), state_at=AT)
    fallback = subscription_state(subscription(items={"data": [{"price": "price_1"}]}), state_at=AT)
    assert [s.period if s else None for s in (from_meta, from_price, fallback)] == ["daily", "yearly", "monthly"]


def test_statuses_we_do_not_know_or_no_id_give_no_state() -> None:
    assert subscription_state(subscription(status="weird"), state_at=AT) is None
    assert subscription_state(subscription(status=None), state_at=AT) is None
    assert subscription_state(subscription(id=None), state_at=AT) is None
    deleted = subscription_state(subscription(status="weird"), state_at=AT + timedelta(seconds=1), deleted=True)
    assert deleted is not None and deleted.status == "canceled" and deleted.state_at == AT + timedelta(seconds=1)
    trialing = subscription_state(subscription(status="trialing", cancel_at_period_end=1), state_at=AT)
    assert trialing is not None and trialing.status == "active" and trialing.cancel_at_period_end is True
