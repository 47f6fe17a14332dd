"""NotificationService: notifications stored per user and sent live as the `notification` event, each
user's per-kind preferences, and the push devices users register. Sources call `notify` after their own
commit; when the user has no live socket, `notify` queues a push job (services/push_delivery.py)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import asyncpg
import structlog

from core.entities import Device, Notification
from core.errors import NotFound
from core.events import Events, NotificationEvent
from core.pages import Slice
from core.wire import NOTIFICATION_KINDS, NotificationKind, NotificationOut
from storage.notifications import DeviceStore, NotificationStore

if TYPE_CHECKING:  # push_delivery imports this module at run time
    from services.push_delivery import PushQueue

log = structlog.get_logger(__name__)

# A kind the user never changed: stored in-app and pushed.
DEFAULT_PREFERENCE = (True, True)


class PresenceCount(Protocol):
    """How many live sockets a user has, on every node (storage/presence.py)."""

    async def count(self, user_id: UUID) -> int: ...


class NotificationService:
    def __init__(
        self, *, pool: asyncpg.Pool, events: Events, presence: PresenceCount, push: PushQueue | None = None
    ) -> None:
        """`push` is the job queue that runs push delivery; None when push is off (no FCM sender)."""
        self._pool = pool
        self._events = events
        self._presence = presence
        self._push = push
        self._store = NotificationStore()
        self._devices = DeviceStore()

    def use_push(self, queue: PushQueue | None) -> None:
        """Turn push on (or off with None) once the job queue exists: it is built after this service,
        since the jobs themselves notify."""
        self._push = queue

    async def notify(
        self, user_id: UUID, kind: str, title: str, body: str, data: Mapping[str, Any] | None = None
    ) -> Notification | None:
        """Store a notification and send it to the user's sockets (after commit); when the user has none and
        wants pushes of the kind, queue a push job. None when the user turned `in_app` off for the kind:
        nothing is stored, sent or pushed."""
        async with self._pool.acquire() as conn, conn.transaction():
            in_app, push = await self._preference(conn, user_id, kind)
            if not in_app:
                return None
            notification = await self._store.insert(
                conn, user_id=user_id, kind=kind, title=title, body=body, data=dict(data or {})
            )
        await self._events.to_user(
            user_id, NotificationEvent(notification=NotificationOut.model_validate(notification))
        )
        if push and self._push is not None:
            await self._queue_pushes(self._push, [notification])
        return notification

    async def delivered(self, notifications: Sequence[Notification]) -> None:
        """Send notifications another store has just committed (a broadcast's batch) as `notify` sends its
        own: each to its user's sockets, then a push queued for each user who wants it and has no socket.
        Best effort, since they are stored: a failure is logged and the rest still go."""
        for notification in notifications:
            try:
                await self._events.to_user(
                    notification.user_id, NotificationEvent(notification=NotificationOut.model_validate(notification))
                )
            except Exception:  # one user's event; the others and the pushes still go
                log.exception("notification event not sent", notification_id=str(notification.id))
        if notifications and self._push is not None:
            await self._queue_pushes(self._push, notifications)

    async def _queue_pushes(self, queue: PushQueue, notifications: Sequence[Notification]) -> None:
        """Queue a push for each notification whose user wants pushes of its kind, has a device and no live
        socket (a user with one got the event just now). Best effort: the notifications are stored, so a
        failure here is logged, never the source's problem."""
        try:
            targets: set[tuple[UUID, str]] = set()
            async with self._pool.acquire() as conn:
                for kind in {n.kind for n in notifications}:
                    users = [n.user_id for n in notifications if n.kind == kind]
                    targets.update((u, kind) for u in await self._devices.push_targets(conn, users, kind))
            for notification in notifications:
                if (notification.user_id, notification.kind) not in targets:
                    continue
                if await self._presence.count(notification.user_id) > 0:
                    continue
                await queue.defer_push(notification_id=notification.id, tokens=None, attempt=1, delay_seconds=0)
        except Exception:  # the source's change is committed; only pushes are lost
            log.exception("push not queued", notifications=len(notifications), kind=notifications[0].kind)

    async def wants_push(self, user_id: UUID, kind: str) -> bool:
        async with self._pool.acquire() as conn:
            _, push = await self._preference(conn, user_id, kind)
        return push

    async def _preference(self, conn: asyncpg.Connection, user_id: UUID, kind: str) -> tuple[bool, bool]:
        return await self._store.preference(conn, user_id, kind) or DEFAULT_PREFERENCE

    async def list(
        self, user_id: UUID, *, unread_only: bool, before: tuple[datetime, UUID] | None, limit: int
    ) -> Slice[Notification]:
        async with self._pool.acquire() as conn:
            rows = await self._store.page(conn, user_id, unread_only=unread_only, before=before, limit=limit + 1)
        return Slice(items=rows[:limit], more=len(rows) > limit)

    async def unread_count(self, user_id: UUID) -> int:
        async with self._pool.acquire() as conn:
            return await self._store.unread_count(conn, user_id)

    async def mark_read(self, user_id: UUID, notification_id: UUID) -> Notification:
        """404 for a notification that is not the user's (or does not exist)."""
        async with self._pool.acquire() as conn:
            notification = await self._store.mark_read(conn, notification_id, user_id)
        if notification is None:
            raise NotFound("notification not found")
        return notification

    async def read_all(self, user_id: UUID) -> int:
        """How many were unread."""
        async with self._pool.acquire() as conn:
            return await self._store.read_all(conn, user_id)

    async def preferences(self, user_id: UUID) -> dict[str, tuple[bool, bool]]:
        """Every kind -> (in_app, push), with the defaults for kinds the user never changed."""
        async with self._pool.acquire() as conn:
            stored = await self._store.preferences(conn, user_id)
        return {kind: stored.get(kind, DEFAULT_PREFERENCE) for kind in NOTIFICATION_KINDS}

    async def update_preferences(
        self, user_id: UUID, changes: Mapping[NotificationKind, tuple[bool | None, bool | None]]
    ) -> dict[str, tuple[bool, bool]]:
        """kind -> (in_app, push); None leaves that one as it is. Answers every kind, as `preferences`."""
        async with self._pool.acquire() as conn, conn.transaction():
            for kind, (in_app, push) in changes.items():
                await self._store.set_preference(conn, user_id, kind, in_app=in_app, push=push)
        return await self.preferences(user_id)

    async def register_device(self, user_id: UUID, *, token: str, platform: str) -> tuple[Device, bool]:
        """Idempotent per token; a token another user registered moves to this one. True when the token was
        not this user's before."""
        async with self._pool.acquire() as conn:
            return await self._devices.upsert(conn, token=token, user_id=user_id, platform=platform)

    async def delete_device(self, user_id: UUID, token: str) -> None:
        """404 for a token that is not the user's."""
        async with self._pool.acquire() as conn:
            deleted = await self._devices.delete(conn, token, user_id)
        if not deleted:
            raise NotFound("device not found")

    async def devices_of(self, user_id: UUID) -> builtins.list[Device]:
        async with self._pool.acquire() as conn:
            return await self._devices.of_user(conn, user_id)
