"""PushDelivery: a stored notification sent to the user's phones through FCM. It runs as a background job
(the job queue calls `deliver`), never on a request's path: NotificationService.notify only queues it,
through the PushQueue it is given.

One `deliver` sends one push per device of the user (or only the given tokens, those still the user's),
deletes the devices FCM calls unregistered, and queues the ones FCM asked to retry as a new job with a
later attempt number, with backoff, until `max_attempts`. Tokens are never logged: a short hash at most."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Protocol, cast
from uuid import UUID

import asyncpg
import structlog
from structlog.stdlib import BoundLogger

from core.entities import Device, Notification
from providers.push import Platform, Push, PushOutcome, PushResult, PushSender, PushSendError
from services.notifications import DEFAULT_PREFERENCE
from storage.notifications import DeviceStore, NotificationStore

log = structlog.get_logger(__name__)

# Data keys FCM refuses: one would fail the message with INVALID_ARGUMENT on every device.
_RESERVED_KEYS = frozenset({"from", "message_type", "notification", "collapse_key"})
_RESERVED_PREFIXES = ("google", "gcm")
_PLATFORMS: frozenset[str] = frozenset({"android", "ios", "web"})


class PushQueue(Protocol):
    """The job queue's side: run `PushDelivery.deliver(notification_id=, tokens=, attempt=)` in a job,
    `delay_seconds` from now."""

    async def defer_push(
        self, *, notification_id: UUID, tokens: Sequence[str] | None, attempt: int, delay_seconds: float
    ) -> None: ...


def token_hash(token: str) -> str:
    """What logs may say about a device: tells two devices apart, gives nothing away."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def push_data(notification: Notification) -> dict[str, str]:
    """FCM data is str -> str: strings stay as they are, anything else as JSON (5 -> "5", True -> "true").
    `kind` and `notification_id` come last so a source's data cannot replace them."""
    data: dict[str, str] = {}
    for key, value in notification.data.items():
        if key in _RESERVED_KEYS or key.startswith(_RESERVED_PREFIXES):
            continue
        data[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    data["kind"] = notification.kind
    data["notification_id"] = str(notification.id)
    return data


def _push(notification: Notification, device: Device, data: Mapping[str, str]) -> Push:
    thread_id = collapse_key = None
    session_id = data.get("session_id")
    if notification.kind == "reply_ready" and session_id:
        # One thread per chat on iOS; on Android a newer reply of the chat replaces an undelivered one.
        thread_id, collapse_key = session_id, f"chat-{session_id}"
    platform = cast(Platform, device.platform) if device.platform in _PLATFORMS else None
    return Push(
        token=device.token,
        title=notification.title,
        body=notification.body,
        data=data,
        platform=platform,
        thread_id=thread_id,
        collapse_key=collapse_key,
    )


class PushDelivery:
    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: PushSender | None,
        queue: PushQueue,
        max_attempts: int = 5,
        base_delay_seconds: float = 2.0,
    ) -> None:
        self._pool = pool
        self._sender = sender
        self._queue = queue
        self._max_attempts = max_attempts
        self._base_delay = base_delay_seconds
        self._notifications = NotificationStore()
        self._devices = DeviceStore()

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt `attempt + 1`: exponential backoff, never sooner than FCM's Retry-After."""
        return max(retry_after or 0.0, self._base_delay * 2 ** (attempt - 1))

    async def deliver(
        self, *, notification_id: UUID, tokens: Sequence[str] | None = None, attempt: int = 1
    ) -> dict[str, int]:
        """Send the notification to the user's devices (all, or only `tokens`); answers how many pushes were
        sent, found unregistered (and deleted), queued again, and failed (given up included)."""
        summary = {"sent": 0, "unregistered": 0, "retried": 0, "failed": 0}
        bound: BoundLogger = log.bind(notification_id=str(notification_id), attempt=attempt)
        if self._sender is None:
            bound.info("push off: no sender configured")
            return summary
        loaded = await self._load(bound, notification_id, tokens)
        if loaded is None:
            return summary
        notification, devices = loaded
        data = push_data(notification)
        pushes = [_push(notification, d, data) for d in devices]
        try:
            results = await self._sender.send(pushes)
        except PushSendError as err:
            bound.warning("push batch failed", error=str(err), devices=len(pushes))
            await self._again(bound, notification_id, [p.token for p in pushes], attempt, None, summary)
            return summary

        retry: list[PushResult] = []
        dead: list[str] = []
        for result in results:
            if result.outcome is PushOutcome.SENT:
                summary["sent"] += 1
            elif result.outcome is PushOutcome.UNREGISTERED:
                dead.append(result.token)
            elif result.outcome is PushOutcome.RETRY:
                retry.append(result)
            else:
                summary["failed"] += 1
                bound.warning("push failed", device=token_hash(result.token), error=result.error)
        if dead:
            async with self._pool.acquire() as conn:
                deleted = await self._devices.delete_of_user(conn, notification.user_id, dead)
            summary["unregistered"] = len(dead)
            bound.info(
                "push devices unregistered", deleted=[token_hash(t) for t in deleted], moved=len(dead) - len(deleted)
            )
        if retry:
            retry_after = max(r.retry_after or 0.0 for r in retry)
            await self._again(bound, notification_id, [r.token for r in retry], attempt, retry_after, summary)
        bound.info("push delivered", **summary)
        return summary

    async def _load(
        self, bound: BoundLogger, notification_id: UUID, tokens: Sequence[str] | None
    ) -> tuple[Notification, list[Device]] | None:
        """The notification and the devices to push it to, or None (and why, logged) when there is nothing to
        send: it is gone, already read, its kind's push was turned off since it was queued, or no device."""
        async with self._pool.acquire() as conn:
            notification = await self._notifications.get(conn, notification_id)
            if notification is None:  # gone with its user
                bound.info("push skipped: notification gone")
                return None
            _, wants_push = (
                await self._notifications.preference(conn, notification.user_id, notification.kind)
                or DEFAULT_PREFERENCE
            )
            if not wants_push:
                bound.info("push skipped: turned off for the kind", kind=notification.kind)
                return None
            devices = await self._devices.of_user(conn, notification.user_id)
        if notification.read_at is not None:  # read in the app meanwhile: nothing left to tell
            bound.info("push skipped: already read")
            return None
        if tokens is not None:
            # Only those still registered to this user: a token can move to another user meanwhile.
            wanted = set(tokens)
            devices = [d for d in devices if d.token in wanted]
        if not devices:
            bound.info("push skipped: no device")
            return None
        return notification, devices

    async def _again(
        self,
        bound: BoundLogger,
        notification_id: UUID,
        tokens: list[str],
        attempt: int,
        retry_after: float | None,
        summary: dict[str, int],
    ) -> None:
        """Queue another attempt for `tokens`, or give up after the last one."""
        if attempt >= self._max_attempts:
            summary["failed"] += len(tokens)
            bound.warning("push given up", devices=[token_hash(t) for t in tokens], attempts=attempt)
            return
        delay = self.retry_delay(attempt, retry_after)
        try:
            await self._queue.defer_push(
                notification_id=notification_id, tokens=tokens, attempt=attempt + 1, delay_seconds=delay
            )
        except Exception:  # noqa: BLE001 - raising would re-run this job and push the sent devices twice
            summary["failed"] += len(tokens)
            bound.exception("push retry could not be queued", devices=len(tokens))
            return
        summary["retried"] += len(tokens)
        bound.info("push retry queued", devices=len(tokens), delay_seconds=delay, next_attempt=attempt + 1)
