"""What a client is told when Stripe is not configured, unreachable or refuses: the provider's errors
as the AppErrors of the billing endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import AppError, BadRequest, Unavailable
from providers.stripe_billing import (
    EventInvalid,
    SignatureInvalid,
    StripeBilling,
    StripeFailed,
    StripeUnavailable,
    WebhooksNotConfigured,
)


def require_stripe(stripe: StripeBilling | None) -> StripeBilling:
    if stripe is None:
        raise Unavailable("billing is not configured on this server (STRIPE_SECRET_KEY)", code="billing_disabled")
    return stripe


@contextmanager
def stripe_call_errors() -> Iterator[None]:
    """Around a call to Stripe's API: unreachable is 503, refused is 502."""
    try:
        yield
    except StripeUnavailable as err:
        raise Unavailable(str(err), code="billing_unavailable") from err
    except StripeFailed as err:
        raise AppError(str(err), code="billing_provider_error", status=502) from err


@contextmanager
def webhook_errors() -> Iterator[None]:
    """Around reading a webhook: without a secret 503; a bad signature or body 400."""
    try:
        yield
    except WebhooksNotConfigured as err:
        raise Unavailable(str(err), code="billing_disabled") from err
    except SignatureInvalid as err:
        raise BadRequest(str(err), code="invalid_signature") from err
    except EventInvalid as err:
        raise BadRequest(str(err), code="invalid_event") from err
