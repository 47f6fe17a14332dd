"""The providers raise their own errors; the services answer them as they always did (same status,
code and message), with the provider's error as the cause."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from core.errors import AppError
from providers.google_play import PlayFailed, PlayTokenInvalid, PlayUnavailable
from providers.stripe_billing import (
    EventInvalid,
    SignatureInvalid,
    StripeFailed,
    StripeUnavailable,
    WebhooksNotConfigured,
)
from services.billing.errors import require_stripe, stripe_call_errors, webhook_errors
from services.play_billing import play_call_errors

CASES = [
    (
        stripe_call_errors,
        StripeUnavailable("the payment provider is unreachable, try again shortly"),
        503,
        "billing_unavailable",
    ),
    (stripe_call_errors, StripeFailed("the payment provider refused the request"), 502, "billing_provider_error"),
    (
        webhook_errors,
        WebhooksNotConfigured("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)"),
        503,
        "billing_disabled",
    ),
    (webhook_errors, SignatureInvalid("the Stripe-Signature does not match this body"), 400, "invalid_signature"),
    (webhook_errors, EventInvalid("not a Stripe event"), 400, "invalid_event"),
    (play_call_errors, PlayUnavailable("the Google Play API refused our credentials"), 503, "billing_unavailable"),
    (play_call_errors, PlayUnavailable("Google Play is unreachable, try again shortly"), 503, "billing_unavailable"),
    (play_call_errors, PlayFailed("Google Play answered with an error"), 502, "billing_provider_error"),
]


@pytest.mark.parametrize(("translate", "error", "status", "code"), CASES)
def test_provider_errors_become_the_same_app_errors(
    translate: Callable[[], AbstractContextManager[None]], error: Exception, status: int, code: str
) -> None:
    with pytest.raises(AppError) as caught, translate():
        raise error
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, str(error))
    assert caught.value.__cause__ is error


def test_other_errors_pass_through() -> None:
    # An unknown purchase token is the caller's to answer (422 on verify, the stored dates on refresh).
    with pytest.raises(PlayTokenInvalid), play_call_errors():
        raise PlayTokenInvalid("unknown")
    with pytest.raises(StripeFailed), webhook_errors():
        raise StripeFailed("not a webhook error")


def test_billing_without_stripe_is_503_billing_disabled() -> None:
    with pytest.raises(AppError) as caught:
        require_stripe(None)
    assert (caught.value.status, caught.value.code) == (503, "billing_disabled")
