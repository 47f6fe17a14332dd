"""NotificationService: notifications stored per user and sent live as the `notification` event, each
user's per-kind preferences, and the push devices users register. Sources call `notify` after their own
commit; push delivery (later) asks `wants_push` and reads `devices_of`."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import Device, Notification
from core.errors import NotFound
from core.events import Events, NotificationEvent
from core.pages import Slice
from core.wire import NOTIFICATION_KINDS, NotificationKind, NotificationOut
from storage.notifications import DeviceStore, NotificationStore

# A kind the user never changed: stored in-app and pushed.
DEFAULT_PREFERENCE = (True, True)


class NotificationService:
    def __init__(self, *, pool: asyncpg.Pool, events: Events) -> None:
        self._pool = pool
        self._events = events
        self._store = NotificationStore()
        self._devices = DeviceStore()

    async def notify(
        self, user_id: UUID, kind: str, title: str, body: str, data: Mapping[str, Any] | None = None
    ) -> Notification | None:
        """Store a notification and send it to the user's sockets (after commit). None when the user turned
        `in_app` off for the kind: nothing is stored or sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            in_app, _ = await self._preference(conn, user_id, kind)
            if not in_app:
                return None
            notification = await self._store.insert(
                conn, user_id=user_id, kind=kind, title=title, body=body, data=dict(data or {})
            )
        await self._events.to_user(
            user_id, NotificationEvent(notification=NotificationOut.model_validate(notification))
        )
        return notification

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
