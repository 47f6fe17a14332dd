"""Google Play Developer API (androidpublisher v3): read a subscription purchase
(`purchases.subscriptionsv2.get`) and acknowledge it (`purchases.subscriptions.acknowledge`), over
aiohttp with a service-account OAuth token (google-auth) or a fixed bearer token. Failures are the
PlayError types below; what the client is told (status, code) is the caller's choice."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import google.auth.credentials
import google.auth.transport.requests
import structlog
from google.oauth2 import service_account

log = structlog.get_logger(__name__)
SCOPE = "https://www.googleapis.com/auth/androidpublisher"
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})$"
)


class PlayError(Exception):
    """A Google Play call that did not succeed; the message says what happened."""


class PlayTokenInvalid(PlayError):
    """Google does not know the purchase token (or it is not for this package)."""


class PlayUnavailable(PlayError):
    """Google Play could not be reached, or refused our credentials: nothing the user can fix."""


class PlayFailed(PlayError):
    """Google Play answered with an error."""


@dataclass(frozen=True)
class PlayLineItem:
    product_id: str
    expiry: datetime | None
    auto_renewing: bool


@dataclass(frozen=True)
class PlaySubscription:
    state: str  # SUBSCRIPTION_STATE_ACTIVE, ..._CANCELED, ..._IN_GRACE_PERIOD, ..._ON_HOLD, ...
    acknowledged: bool
    linked_purchase_token: str | None
    line_items: tuple[PlayLineItem, ...]
    raw: dict[str, Any]

    @property
    def expiry(self) -> datetime | None:
        times = [item.expiry for item in self.line_items if item.expiry is not None]
        return max(times) if times else None

    @property
    def auto_renewing(self) -> bool:
        return any(item.auto_renewing for item in self.line_items)


class AccessToken(Protocol):
    async def header(self) -> str: ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    async def header(self) -> str:
        return f"Bearer {self._token}"


class ServiceAccountToken:
    """OAuth access token of a service account, refreshed (off the event loop) when it expires."""

    def __init__(self, credentials: google.auth.credentials.Credentials) -> None:
        self._credentials = credentials
        self._lock = asyncio.Lock()

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccountToken:
        return cls(service_account.Credentials.from_service_account_file(str(path), scopes=[SCOPE]))

    async def header(self) -> str:
        async with self._lock:
            if not self._credentials.valid:
                request = google.auth.transport.requests.Request()
                await asyncio.to_thread(self._credentials.refresh, request)
        return f"Bearer {self._credentials.token}"


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 as Google writes it (`2026-01-02T03:04:05.123456789Z`); None for anything else."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value)
    if match is None:
        return None
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")  # datetime keeps microseconds
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    try:
        return datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    except ValueError:
        return None


def parse_subscription(data: dict[str, Any]) -> PlaySubscription:
    items = []
    for item in data.get("lineItems") or []:
        if not isinstance(item, dict):
            continue
        renewing = item.get("autoRenewingPlan")
        items.append(
            PlayLineItem(
                product_id=str(item.get("productId") or ""),
                expiry=parse_time(item.get("expiryTime")),
                auto_renewing=isinstance(renewing, dict) and bool(renewing.get("autoRenewEnabled")),
            )
        )
    linked = data.get("linkedPurchaseToken")
    return PlaySubscription(
        state=str(data.get("subscriptionState") or "SUBSCRIPTION_STATE_UNSPECIFIED"),
        acknowledged=data.get("acknowledgementState") == "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED",
        linked_purchase_token=linked if isinstance(linked, str) and linked else None,
        line_items=tuple(items),
        raw=data,
    )


class GooglePlay:
    def __init__(self, *, package_name: str, token: AccessToken, api_base: str, timeout_seconds: float) -> None:
        self._package = package_name
        self._token = token
        self._base = api_base.rstrip("/")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))

    async def aclose(self) -> None:
        await self._http.close()

    def _url(self, tail: str) -> str:
        return f"{self._base}/androidpublisher/v3/applications/{quote(self._package, safe='')}/purchases/{tail}"

    async def get_subscription(self, purchase_token: str) -> PlaySubscription:
        """Raises PlayTokenInvalid when Google does not know the token."""
        url = self._url(f"subscriptionsv2/tokens/{quote(purchase_token, safe='')}")
        data = await self._request("GET", url, None)
        return parse_subscription(data)

    async def acknowledge(self, *, product_id: str, purchase_token: str) -> None:
        url = self._url(
            f"subscriptions/{quote(product_id, safe='')}/tokens/{quote(purchase_token, safe='')}:acknowledge"
        )
        await self._request("POST", url, {})

    async def _request(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Authorization": await self._token.header(), "Accept": "application/json"}
        for attempt in (1, 2):  # one retry on a transient failure
            try:
                async with self._http.request(method, url, json=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status in (400, 404, 410):
                        raise PlayTokenInvalid(_google_message(text))
                    if resp.status in (401, 403):
                        log.warning("google play refused our credentials", status=resp.status)
                        raise PlayUnavailable("the Google Play API refused our credentials")
                    if resp.status >= 500 and attempt == 1:
                        continue
                    if resp.status >= 300:
                        log.warning("google play error", status=resp.status, message=_google_message(text))
                        raise PlayFailed("Google Play answered with an error")
                    if not text.strip():
                        return {}
                    data = await resp.json(content_type=None)
                    return data if isinstance(data, dict) else {}
            except (aiohttp.ClientError, TimeoutError) as err:
                if attempt == 1:
                    continue
                log.warning("google play unreachable", error=type(err).__name__)
                raise PlayUnavailable("Google Play is unreachable, try again shortly") from err
        raise PlayFailed("Google Play answered with an error")


def _google_message(text: str) -> str:
    try:
        error = json.loads(text).get("error", {})
        return str(error.get("message") or error.get("status") or "")[:200]
    except (ValueError, AttributeError):
        return text[:200]
