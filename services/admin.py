"""Admin actions on users. Every action is written to the audit log in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import Principal
from core.errors import Forbidden, NotFound
from core.events import Events
from storage.audit import AuditRow, AuditStore
from storage.refresh_tokens import RefreshTokenStore
from storage.users import UserStore

log = structlog.get_logger(__name__)


class AdminService:
    def __init__(self, *, pool: asyncpg.Pool, events: Events) -> None:
        self._pool = pool
        self._events = events
        self._users = UserStore()
        self._tokens = RefreshTokenStore()
        self._audit = AuditStore()

    @staticmethod
    def require_admin(actor: Principal) -> None:
        if not actor.is_admin:
            raise Forbidden("admin only")

    async def audit(self, actor: Principal, *, action: str, target_id: str, details: dict[str, Any]) -> None:
        """Record an admin action made through another service."""
        self.require_admin(actor)
        async with self._pool.acquire() as conn:
            await self._audit.record(
                conn, actor_id=actor.id, action=action, target_type="user", target_id=target_id, details=details
            )

    async def set_ban(self, actor: Principal, user_id: UUID, *, banned: bool, reason: str | None) -> Principal:
        self.require_admin(actor)
        if user_id == actor.id:
            raise Forbidden("admins cannot ban themselves", code="forbidden")
        async with self._pool.acquire() as conn, conn.transaction():
            target = await self._users.set_ban(conn, user_id, banned=banned, reason=reason)
            if target is None:
                raise NotFound("user not found")
            if banned:
                await self._tokens.revoke_user(conn, user_id)
            await self._audit.record(
                conn,
                actor_id=actor.id,
                action="user.ban" if banned else "user.unban",
                target_type="user",
                target_id=str(user_id),
                details={"reason": reason} if reason else {},
            )
        if banned:
            await self._events.disconnect_user(user_id, reason="banned")
        log.info("user ban changed", target_id=str(user_id), banned=banned)
        return target.principal()

    async def get_user(self, actor: Principal, user_id: UUID) -> Principal:
        self.require_admin(actor)
        async with self._pool.acquire() as conn:
            user = await self._users.get(conn, user_id)
        if user is None:
            raise NotFound("user not found")
        return user.principal()

    async def search_users(
        self, actor: Principal, *, query: str | None, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[Principal]:
        self.require_admin(actor)
        async with self._pool.acquire() as conn:
            return [u.principal() for u in await self._users.search(conn, query=query, before=before, limit=limit)]

    async def audit_log(self, actor: Principal, *, before_id: int | None, limit: int) -> list[AuditRow]:
        self.require_admin(actor)
        async with self._pool.acquire() as conn:
            return await self._audit.page(conn, before_id=before_id, limit=limit)
