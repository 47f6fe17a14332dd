"""Stripe through stripe-python's async client (SDK-NOTES): `StripeClient` on aiohttp with retries, the
`*_async` methods under `client.v1`, a deterministic idempotency key on every create, and webhook
signatures checked on the raw body. Everything returned is plain data (dicts), never SDK objects, and
failures are the StripeBillingError types below: what the client is told (status, code) is the caller's."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import stripe
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


class StripeBillingError(Exception):
    """A Stripe call or webhook that did not succeed; the message says what happened."""


class StripeUnavailable(StripeBillingError):
    """Stripe could not be reached (after the SDK's retries)."""


class StripeFailed(StripeBillingError):
    """Stripe answered our request with an error."""


class WebhooksNotConfigured(StripeBillingError):
    """No webhook secret: no event can be verified."""


class SignatureInvalid(StripeBillingError):
    """The Stripe-Signature header does not match the body."""


class EventInvalid(StripeBillingError):
    """A correctly signed body that is not an event."""


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int  # unix seconds, Stripe's clock
    object: dict[str, Any]  # event.data.object


@dataclass(frozen=True)
class HostedSession:
    id: str
    url: str


class StripeBilling:
    def __init__(self, secret_key: str, *, webhook_secret: str | None, api_base: str | None) -> None:
        self._webhook_secret = webhook_secret
        # http_client explicitly: without it the SDK picks httpx (installed by firebase-admin).
        self._http = stripe.AIOHTTPClient()
        self._client = stripe.StripeClient(
            secret_key,
            http_client=self._http,
            max_network_retries=2,
            base_addresses={"api": api_base} if api_base else None,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    def construct_event(self, payload: bytes, signature: str | None) -> StripeEvent:
        """Verify the `Stripe-Signature` header on the raw body (tolerance 300 s) and parse the event."""
        if not self._webhook_secret:
            raise WebhooksNotConfigured("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")
        try:
            event = self._client.construct_event(payload, signature, self._webhook_secret)
        except (stripe.SignatureVerificationError, ValueError) as err:
            raise SignatureInvalid("the Stripe-Signature does not match this body") from err
        data = event.to_dict()
        obj = (data.get("data") or {}).get("object")
        if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str) or not isinstance(obj, dict):
            raise EventInvalid("not a Stripe event")
        return StripeEvent(id=data["id"], type=data["type"], created=int(data.get("created") or 0), object=obj)

    async def create_customer(self, *, user_id: str, email: str, idempotency_key: str) -> str:
        customer = await self._call(
            "customers.create",
            self._client.v1.customers.create_async(
                {"email": email, "metadata": {"user_id": user_id}},
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(customer.id)

    async def create_checkout_session(self, params: dict[str, Any], *, idempotency_key: str) -> HostedSession:
        session = await self._call(
            "checkout.sessions.create",
            self._client.v1.checkout.sessions.create_async(cast(Any, params), {"idempotency_key": idempotency_key}),
        )
        return HostedSession(id=str(session.id), url=str(session.url))

    async def create_portal_session(self, *, customer: str, return_url: str, idempotency_key: str) -> HostedSession:
        session = await self._call(
            "billing_portal.sessions.create",
            self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}, {"idempotency_key": idempotency_key}
            ),
        )
        return HostedSession(id=str(session.id), url=str(session.url))

    async def cancel_at_period_end(self, subscription_id: str, *, idempotency_key: str) -> dict[str, Any]:
        subscription = await self._call(
            "subscriptions.update",
            self._client.v1.subscriptions.update_async(
                subscription_id, {"cancel_at_period_end": True}, {"idempotency_key": idempotency_key}
            ),
        )
        return subscription.to_dict()

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        try:
            return await request
        except stripe.APIConnectionError as err:
            log.warning("stripe unreachable", call=what, error=type(err).__name__)
            raise StripeUnavailable("the payment provider is unreachable, try again shortly") from err
        except stripe.StripeError as err:
            # The message is Stripe's, about our request (never a card number or a key).
            log.warning("stripe refused a request", call=what, status=err.http_status, error=err.user_message)
            raise StripeFailed("the payment provider refused the request") from err
