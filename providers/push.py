"""Push notifications to phones through Firebase Cloud Messaging (firebase-admin's messaging API).

`PushSender.send` takes a batch and answers one `PushResult` per message, in order; it never raises
for one device's failure. Each failure is classified for the caller: `UNREGISTERED` (the token is
dead or malformed: delete the device), `RETRY` (quota or an unavailable FCM: send again later, after
`retry_after` seconds when FCM said so), `FAILED` (anything else: log it, keep the device)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import itertools
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import firebase_admin
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
from firebase_admin import credentials, exceptions, messaging

DEFAULT_FCM_BASE_URL = "https://fcm.googleapis.com"
# firebase-admin's own limit for one send_each call.
_BATCH_LIMIT = 500
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_app_names = itertools.count()

Platform = Literal["android", "ios", "web"]


class PushConfigError(Exception):
    """The push sender cannot be built: unreadable credentials, no project id, or an endpoint
    firebase-admin cannot be pointed at."""


class PushSendError(Exception):
    """A whole batch could not be sent (not one device's failure: those are in PushResult)."""


class PushOutcome(enum.StrEnum):
    SENT = "sent"
    UNREGISTERED = "unregistered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Push:
    """One notification for one device. `data` travels to the app untouched (the deep link: session and
    message ids); the platform hints pick how the phone shows it."""

    token: str
    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    # Android: the notification channel and the intent action the app's chat activity listens for.
    android_channel: str = "chat"
    click_action: str = "OPEN_CHAT"
    # APNs: the category the iOS app registers for chat replies, and the thread that groups them.
    ios_category: str = "CHAT_REPLY"
    thread_id: str | None = None
    # Replaces an earlier, undelivered push with the same key (one per chat, say).
    collapse_key: str | None = None

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("push token must not be empty")
        for key, value in self.data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError("push data must map str to str")


@dataclass(frozen=True)
class PushResult:
    token: str
    outcome: PushOutcome
    message_id: str | None = None
    # Seconds FCM asked us to wait (Retry-After), only with RETRY and only when the answer carried it.
    retry_after: float | None = None
    # The FCM error code and message, for logs; never contains the token.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is PushOutcome.SENT


class PushSender(Protocol):
    async def send(self, messages: Sequence[Push]) -> list[PushResult]: ...

    async def close(self) -> None: ...


class _GoogleCredential(credentials.Base):
    """Wraps a ready google-auth credential (tests: a fixed token, no key, no token fetch)."""

    def __init__(self, credential: google.auth.credentials.Credentials) -> None:
        self._credential = credential

    def get_credential(self) -> google.auth.credentials.Credentials:
        return self._credential


class FcmSender:
    def __init__(self, app: firebase_admin.App, *, base_url: str = DEFAULT_FCM_BASE_URL) -> None:
        self._app = app
        self._service = _messaging_service(app, base_url)
        self._credential: google.auth.credentials.Credentials = app.credential.get_credential()

    @classmethod
    def from_settings(
        cls, credentials_path: Path | None, project_id: str | None = None, *, base_url: str = DEFAULT_FCM_BASE_URL
    ) -> FcmSender | None:
        """The sender for FIREBASE_CREDENTIALS, or None when it is unset (push off)."""
        if credentials_path is None:
            return None
        try:
            cred: credentials.Base = credentials.Certificate(str(credentials_path))
        except (OSError, ValueError) as err:
            raise PushConfigError(f"cannot read firebase credentials {credentials_path}") from err
        return cls._create(cred, project_id, base_url)

    @classmethod
    def from_credential(
        cls, credential: google.auth.credentials.Credentials, project_id: str, *, base_url: str = DEFAULT_FCM_BASE_URL
    ) -> FcmSender:
        """A sender on an existing google-auth credential (tests: `google.oauth2.credentials.Credentials`)."""
        return cls._create(_GoogleCredential(credential), project_id, base_url)

    @classmethod
    def _create(cls, cred: credentials.Base, project_id: str | None, base_url: str) -> FcmSender:
        options: dict[str, Any] = {"projectId": project_id} if project_id else {}
        # An App of its own: the sign-in verifier has another, and deleting one leaves the other alone.
        app = firebase_admin.initialize_app(cred, options, name=f"parlor-push-{next(_app_names)}")
        try:
            return cls(app, base_url=base_url)
        except ValueError as err:  # the SDK's answer to a missing project id
            firebase_admin.delete_app(app)
            raise PushConfigError(f"fcm needs a project id: {err}") from err
        except BaseException:
            # The SDK's close uses asyncio.run(), which fails inside a loop; this service never sent.
            with contextlib.suppress(RuntimeError):
                firebase_admin.delete_app(app)
            raise

    async def send(self, messages: Sequence[Push]) -> list[PushResult]:
        if not messages:
            return []
        await self._refresh_token()
        results: list[PushResult] = []
        for start in range(0, len(messages), _BATCH_LIMIT):
            chunk = messages[start : start + _BATCH_LIMIT]
            try:
                batch = await messaging.send_each_async([_to_message(p) for p in chunk], app=self._app)
            except (exceptions.FirebaseError, ValueError) as err:
                raise PushSendError(f"fcm batch failed: {err}") from err
            results.extend(_result(p, r) for p, r in zip(chunk, batch.responses, strict=True))
        return results

    async def _refresh_token(self) -> None:
        # firebase-admin refreshes an expiring OAuth token with blocking `requests` inside the send,
        # on the event loop; do it in a thread first so the send finds a fresh token.
        cred = self._credential
        if cred.token_state is not google.auth.credentials.TokenState.FRESH:
            try:
                await asyncio.to_thread(cred.refresh, google.auth.transport.requests.Request())
            except google.auth.exceptions.GoogleAuthError as err:
                raise PushSendError(f"fcm access token refresh failed: {err}") from err

    async def close(self) -> None:
        # The SDK's own close runs asyncio.run(), impossible inside a running loop: close the async
        # HTTP client here, then delete the App (whose close finds the client already closed) in a thread.
        client = getattr(self._service, "_async_client", None)
        if client is not None:
            await client.aclose()
        await asyncio.to_thread(firebase_admin.delete_app, self._app)


def _messaging_service(app: firebase_admin.App, base_url: str) -> Any:
    """The one reach into firebase-admin's messaging internals (checked with 7.7.0): the send URL is
    fixed per service instance (`_fcm_url`, built from the class attribute `FCM_URL`). Setting it
    on this App's own service leaves every other App, and the class, untouched."""
    service = messaging._get_messaging_service(app)
    base = base_url.rstrip("/")
    if base == DEFAULT_FCM_BASE_URL:
        return service
    expected = messaging._MessagingService.FCM_URL.format(app.project_id)
    if getattr(service, "_fcm_url", None) != expected:
        raise PushConfigError(
            f"firebase-admin {firebase_admin.__version__} does not expose its FCM URL as expected: "
            f"cannot point it at {base}"
        )
    service._fcm_url = f"{base}/v1/projects/{app.project_id}/messages:send"
    return service


def _to_message(push: Push) -> messaging.Message:
    data = dict(push.data)
    android = messaging.AndroidConfig(
        priority="high",
        collapse_key=push.collapse_key,
        notification=messaging.AndroidNotification(
            channel_id=push.android_channel, click_action=push.click_action, tag=push.collapse_key
        ),
    )
    apns_headers = {"apns-priority": "10", "apns-push-type": "alert"}
    if push.collapse_key:
        apns_headers["apns-collapse-id"] = push.collapse_key
    apns = messaging.APNSConfig(
        headers=apns_headers,
        # The deep-link data sits beside `aps` as well, where the iOS app reads it on a tap.
        payload=messaging.APNSPayload(
            aps=messaging.Aps(
                alert=messaging.ApsAlert(title=push.title, body=push.body),
                sound="default",
                mutable_content=True,
                category=push.ios_category,
                thread_id=push.thread_id,
            ),
            **{k: v for k, v in data.items() if k != "aps"},
        ),
    )
    with warnings.catch_warnings():
        # 7.7 marks `token` deprecated in favour of installation ids, but devices register FCM
        # registration tokens, which is what the v1 API's `message.token` still takes.
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(
            token=push.token,
            notification=messaging.Notification(title=push.title, body=push.body),
            data=data,
            android=android,
            apns=apns,
        )


def _result(push: Push, response: messaging.SendResponse) -> PushResult:
    if response.success:
        return PushResult(push.token, PushOutcome.SENT, message_id=response.message_id)
    err = response.exception
    error = f"{getattr(err, 'code', 'UNKNOWN')}: {err}"
    return PushResult(push.token, _classify(err), retry_after=_retry_after(err), error=error)


def _classify(err: BaseException | None) -> PushOutcome:
    if isinstance(err, messaging.UnregisteredError):
        return PushOutcome.UNREGISTERED
    if isinstance(err, exceptions.InvalidArgumentError):
        # A malformed token, unless FCM names another field: then our payload is wrong, and every
        # device would get the same answer, so deleting them would be a mistake.
        return PushOutcome.FAILED if _payload_fault(err) else PushOutcome.UNREGISTERED
    if isinstance(
        err,
        exceptions.ResourceExhaustedError  # 429, QuotaExceededError included
        | exceptions.UnavailableError  # 503 and connection failures
        | exceptions.InternalError  # 500
        | exceptions.DeadlineExceededError,  # timeouts
    ):
        return PushOutcome.RETRY
    return PushOutcome.FAILED


def _error_details(err: exceptions.FirebaseError) -> list[dict[str, Any]]:
    response = err.http_response
    if response is None:
        return []
    try:
        body = response.json()
    except ValueError:
        return []
    details = body.get("error", {}).get("details", []) if isinstance(body, dict) else []
    return [d for d in details if isinstance(d, dict)]


def _payload_fault(err: exceptions.FirebaseError) -> bool:
    for detail in _error_details(err):
        if detail.get("@type") == _BAD_REQUEST_TYPE:
            fields = [v.get("field", "") for v in detail.get("fieldViolations", []) if isinstance(v, dict)]
            if any(f and f != "message.token" for f in fields):
                return True
    return False


def _retry_after(err: BaseException | None) -> float | None:
    response = getattr(err, "http_response", None)
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
