"""A local fake of the Google Play Developer API (androidpublisher v3) for subscriptions:
`GET .../purchases/subscriptionsv2/tokens/{token}` answers a SubscriptionPurchaseV2 and
`POST .../purchases/subscriptions/{productId}/tokens/{token}:acknowledge` acknowledges, with state,
expiry and errors controllable per token; every request and acknowledge is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.server import serve

PACKAGE = "app.parlor.test"
ACCESS_TOKEN = "fake-play-access-token"


def rfc3339(value: datetime) -> str:
    """As Google writes times: UTC, `Z`, with fractional seconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class Purchase:
    product_id: str
    expiry: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=30))
    state: str = "SUBSCRIPTION_STATE_ACTIVE"
    acknowledged: bool = False
    auto_renewing: bool = True
    linked_purchase_token: str | None = None
    error_status: int | None = None  # answer this error instead (e.g. 410 for a purged purchase)


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None


class FakePlay:
    def __init__(self, package: str = PACKAGE, access_token: str = ACCESS_TOKEN) -> None:
        self.package = package
        self.access_token = access_token
        self.purchases: dict[str, Purchase] = {}
        self.calls: list[Call] = []
        self.acknowledged: list[tuple[str, str]] = []  # (product id, token)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        base = "/androidpublisher/v3/applications/{package}/purchases"
        app.router.add_get(base + "/subscriptionsv2/tokens/{token}", self._get)
        app.router.add_post(base + "/subscriptions/{product}/tokens/{tail}", self._acknowledge)
        self._runner, self.url = await serve(app)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add(self, token: str, purchase: Purchase) -> Purchase:
        self.purchases[token] = purchase
        return purchase

    @staticmethod
    def _error(status: int, message: str, reason: str) -> web.Response:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 410: "FAILED_PRECONDITION"}
        body = {
            "error": {
                "code": status,
                "message": message,
                "status": names.get(status, "UNKNOWN"),
                "errors": [{"message": message, "domain": "androidpublisher", "reason": reason}],
            }
        }
        return web.json_response(body, status=status)

    def _check(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        self.calls.append(Call(request.method, request.path, auth))
        if auth != f"Bearer {self.access_token}":
            return self._error(401, "Request had invalid authentication credentials.", "authError")
        if request.match_info["package"] != self.package:
            return self._error(404, "No application was found for the given package name.", "applicationNotFound")
        return None

    def _lookup(self, token: str) -> Purchase | web.Response:
        purchase = self.purchases.get(token)
        if purchase is None:
            return self._error(400, "Invalid Value", "invalid")
        if purchase.error_status is not None:
            return self._error(purchase.error_status, "The subscription purchase is no longer available.", "gone")
        return purchase

    async def _get(self, request: web.Request) -> web.Response:
        error = self._check(request)
        if error is not None:
            return error
        token = request.match_info["token"]
        found = self._lookup(token)
        if isinstance(found, web.Response):
            return found
        item: dict[str, Any] = {
            "productId": found.product_id,
            "expiryTime": rfc3339(found.expiry),
            "offerDetails": {"basePlanId": "base", "offerTags": []},
            "latestSuccessfulOrderId": f"GPA.3333-{abs(hash(token)) % 10000:04d}",
        }
        if found.auto_renewing:
            item["autoRenewingPlan"] = {"autoRenewEnabled": True}
        body: dict[str, Any] = {
            "kind": "androidpublisher#subscriptionPurchaseV2",
            "regionCode": "US",
            "startTime": rfc3339(found.expiry - timedelta(days=30)),
            "subscriptionState": found.state,
            "latestOrderId": item["latestSuccessfulOrderId"],
            "acknowledgementState": "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
            if found.acknowledged
            else "ACKNOWLEDGEMENT_STATE_PENDING",
            "lineItems": [item],
        }
        if found.linked_purchase_token:
            body["linkedPurchaseToken"] = found.linked_purchase_token
        return web.json_response(body)

    async def _acknowledge(self, request: web.Request) -> web.Response:
        error = self._check(request)
        if error is not None:
            return error
        tail = request.match_info["tail"]
        if not tail.endswith(":acknowledge"):
            return self._error(404, "not faked", "notFound")
        token = tail.removesuffix(":acknowledge")
        found = self._lookup(token)
        if isinstance(found, web.Response):
            return found
        if found.product_id != request.match_info["product"]:
            return self._error(400, "The product id does not match the purchase.", "invalid")
        if found.state == "SUBSCRIPTION_STATE_PENDING":
            return self._error(400, "The purchase is pending.", "purchasePending")
        found.acknowledged = True
        self.acknowledged.append((found.product_id, token))
        return web.Response(status=200)  # Google answers an empty body
