"""A local fake of the few Stripe API endpoints Parlor uses, speaking Stripe's wire format: form-encoded
bodies with the nested bracket syntax (`metadata[user_id]=…`, `line_items[0][price_data][unit_amount]=…`),
`Authorization: Bearer sk_…`, the `Idempotency-Key` header honoured (the same key returns the same
object; the same key with other parameters is an `idempotency_error`), JSON objects shaped like
Stripe's (`id`, `object`, `url`, …) and errors as `{"error": {"type", "message", …}}`.

Also builds what Stripe would send to the webhook: events wrapping these objects, signed with
`stripe.WebhookSignature.generate_signature_header` (tests/fakes/stripe.sign)."""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import stripe
from aiohttp import web

from tests.fakes.server import serve

API_KEY = "sk_test_parlor_fake"
WEBHOOK_SECRET = "whsec_parlor_fake"
API_VERSION = "2025-10-29.clover"
INTERVAL_SECONDS = {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    authorization: str | None
    replayed: bool = False


@dataclass
class Failure:
    status: int
    type: str = "api_error"
    message: str = "fake failure"
    code: str | None = None


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket syntax → nested dicts and lists: `a[b][0][c]=1` → {"a": {"b": [{"c": "1"}]}}."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(value: Any) -> Any:
        if isinstance(value, dict):
            converted = {k: listify(v) for k, v in value.items()}
            if converted and all(k.isdigit() for k in converted):
                return [converted[k] for k in sorted(converted, key=int)]
            return converted
        return value

    result = listify(root)
    assert isinstance(result, dict)
    return result


def sign(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp))


class FakeStripe:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.failures: deque[Failure] = deque()
        self._idempotent: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/customers", self._create_customer)
        app.router.add_get("/v1/customers/{id}", self._get(self.customers, "customer"))
        app.router.add_post("/v1/checkout/sessions", self._create_checkout_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get(self.sessions, "checkout.session"))
        app.router.add_post("/v1/billing_portal/sessions", self._create_portal_session)
        app.router.add_get("/v1/subscriptions/{id}", self._get(self.subscriptions, "subscription"))
        app.router.add_post("/v1/subscriptions/{id}", self._update_subscription)
        self._runner, self.url = await serve(app)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # --- the wire ---------------------------------------------------------------------------------

    @staticmethod
    def _error(
        status: int, type_: str, message: str, code: str | None = None, param: str | None = None
    ) -> web.Response:
        error: dict[str, Any] = {"type": type_, "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        return web.json_response({"error": error}, status=status, headers={"Request-Id": _new_id("req")})

    async def _read(self, request: web.Request) -> tuple[Recorded, web.Response | None]:
        raw = await request.text() if request.method == "POST" else request.query_string
        params = nest(parse_qsl(raw, keep_blank_values=True))
        record = Recorded(
            request.method,
            request.path,
            params,
            request.headers.get("Idempotency-Key"),
            request.headers.get("Authorization"),
        )
        self.requests.append(record)
        if request.method == "POST" and request.content_type != "application/x-www-form-urlencoded":
            return record, self._error(400, "invalid_request_error", "bodies are form-encoded")
        if record.authorization != f"Bearer {self.api_key}":
            return record, self._error(401, "invalid_request_error", "Invalid API Key provided")
        if self.failures:
            failure = self.failures.popleft()
            return record, self._error(failure.status, failure.type, failure.message, failure.code)
        return record, None

    def _respond(self, request: web.Request, record: Recorded, make: Any) -> web.Response:
        """Run `make()` → (status, body) once per Idempotency-Key; a repeat gets the first answer."""
        key = record.idempotency_key
        fingerprint = json.dumps([request.method, request.path, record.params], sort_keys=True)
        if key and key in self._idempotent:
            first, status, body = self._idempotent[key]
            if first != fingerprint:
                return self._error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )
            record.replayed = True
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        status, body = make()
        if key:
            self._idempotent[key] = (fingerprint, status, body)
        return web.json_response(body, status=status, headers={"Request-Id": _new_id("req")})

    def _get(self, store: dict[str, dict[str, Any]], kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            _, error = await self._read(request)
            if error is not None:
                return error
            obj = store.get(request.match_info["id"])
            if obj is None:
                return self._error(
                    404,
                    "invalid_request_error",
                    f"No such {kind}: '{request.match_info['id']}'",
                    "resource_missing",
                    "id",
                )
            return web.json_response(obj)

        return handler

    async def _create_customer(self, request: web.Request) -> web.Response:
        record, error = await self._read(request)
        if error is not None:
            return error

        def make() -> tuple[int, dict[str, Any]]:
            customer = {
                "id": _new_id("cus"),
                "object": "customer",
                "created": int(time.time()),
                "email": record.params.get("email"),
                "metadata": record.params.get("metadata", {}),
                "livemode": False,
            }
            self.customers[customer["id"]] = customer
            return 200, customer

        return self._respond(request, record, make)

    async def _create_checkout_session(self, request: web.Request) -> web.Response:
        record, error = await self._read(request)
        if error is not None:
            return error
        params = record.params
        mode = params.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            return self._error(400, "invalid_request_error", "Invalid mode", param="mode")
        if not params.get("success_url"):
            return self._error(
                400, "invalid_request_error", "Missing required param: success_url.", param="success_url"
            )
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            return self._error(400, "invalid_request_error", f"No such customer: '{customer}'", "resource_missing")
        items = params.get("line_items") or []
        if not items:
            return self._error(400, "invalid_request_error", "line_items is required", param="line_items")
        for item in items:
            recurring = (item.get("price_data") or {}).get("recurring")
            if mode == "subscription" and "price" not in item and not recurring:
                return self._error(400, "invalid_request_error", "subscription mode needs a recurring price")
            if mode == "payment" and recurring:
                return self._error(400, "invalid_request_error", "payment mode takes one-time prices only")

        def make() -> tuple[int, dict[str, Any]]:
            session_id = _new_id("cs_test")
            first = items[0].get("price_data") or {}
            amount = sum(
                int((i.get("price_data") or {}).get("unit_amount", 0)) * int(i.get("quantity", 1)) for i in items
            )
            session = {
                "id": session_id,
                "object": "checkout.session",
                "mode": mode,
                "status": "open",
                "payment_status": "unpaid",
                "customer": customer,
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata", {}),
                "amount_total": amount,
                "currency": first.get("currency", "usd"),
                "success_url": params["success_url"],
                "cancel_url": params.get("cancel_url"),
                "subscription": None,
                "payment_intent": None,
                "url": f"https://checkout.stripe.com/c/pay/{session_id}",
                "created": int(time.time()),
                "livemode": False,
                # Not part of Stripe's session object: kept so tests can look at what was sold.
                "_line_items": items,
                "_subscription_data": params.get("subscription_data", {}),
            }
            self.sessions[session_id] = session
            return 200, self.public(session)

        return self._respond(request, record, make)

    async def _create_portal_session(self, request: web.Request) -> web.Response:
        record, error = await self._read(request)
        if error is not None:
            return error
        customer = record.params.get("customer")
        if customer not in self.customers:
            return self._error(400, "invalid_request_error", f"No such customer: '{customer}'", "resource_missing")

        def make() -> tuple[int, dict[str, Any]]:
            portal_id = _new_id("bps")
            portal = {
                "id": portal_id,
                "object": "billing_portal.session",
                "customer": customer,
                "return_url": record.params.get("return_url"),
                "url": f"https://billing.stripe.com/p/session/{portal_id}",
                "created": int(time.time()),
                "livemode": False,
            }
            self.portal_sessions[portal_id] = portal
            return 200, portal

        return self._respond(request, record, make)

    async def _update_subscription(self, request: web.Request) -> web.Response:
        record, error = await self._read(request)
        if error is not None:
            return error
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            message = f"No such subscription: '{request.match_info['id']}'"
            return self._error(404, "invalid_request_error", message, "resource_missing", "id")

        def make() -> tuple[int, dict[str, Any]]:
            if "cancel_at_period_end" in record.params:
                sub["cancel_at_period_end"] = record.params["cancel_at_period_end"] == "true"
            if "metadata" in record.params:
                sub["metadata"] = {**sub.get("metadata", {}), **record.params["metadata"]}
            return 200, sub

        return self._respond(request, record, make)

    # --- what tests do on Stripe's side -----------------------------------------------------------

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def complete_checkout(self, session_id: str, *, period_seconds: int | None = None) -> dict[str, Any]:
        """The customer paid: the session completes and, in subscription mode, a subscription starts."""
        session = self.sessions[session_id]
        session.update(status="complete", payment_status="paid")
        if session["mode"] == "subscription":
            item = session["_line_items"][0]
            price_data = item.get("price_data") or {}
            interval = (price_data.get("recurring") or {}).get("interval", "month")
            now = int(time.time())
            end = now + (period_seconds if period_seconds is not None else INTERVAL_SECONDS[interval])
            sub_id = _new_id("sub")
            self.subscriptions[sub_id] = {
                "id": sub_id,
                "object": "subscription",
                "customer": session["customer"],
                "status": "active",
                "cancel_at_period_end": False,
                "canceled_at": None,
                "created": now,
                "metadata": (session["_subscription_data"] or {}).get("metadata", {}),
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "id": _new_id("si"),
                            "object": "subscription_item",
                            "current_period_start": now,
                            "current_period_end": end,
                            "quantity": 1,
                            "price": {
                                "id": item.get("price") or _new_id("price"),
                                "object": "price",
                                "currency": price_data.get("currency", "usd"),
                                "unit_amount": int(price_data.get("unit_amount", 0)),
                                "recurring": {"interval": interval, "interval_count": 1},
                            },
                        }
                    ],
                },
                "livemode": False,
            }
            session["subscription"] = sub_id
        else:
            session["payment_intent"] = _new_id("pi")
        return self.public(session)

    def invoice(self, subscription_id: str, *, paid: bool = True, amount: int = 999) -> dict[str, Any]:
        sub = self.subscriptions[subscription_id]
        item = sub["items"]["data"][0]
        return {
            "id": _new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "status": "paid" if paid else "open",
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "currency": item["price"]["currency"],
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{secrets.token_hex(8)}",
            "created": int(time.time()),
            "period_start": item["current_period_start"],
            "period_end": item["current_period_start"],
            "lines": {
                "object": "list",
                "data": [{"period": {"start": item["current_period_start"], "end": item["current_period_end"]}}],
            },
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription_id, "metadata": sub.get("metadata", {})},
            },
            "livemode": False,
        }


def event(type_: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> str:
    """A webhook body as Stripe sends it (a snapshot event), as the exact string to sign and post."""
    body = {
        "id": event_id or _new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created if created is not None else int(time.time()),
        "type": type_,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }
    return json.dumps(body)
