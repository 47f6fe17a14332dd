"""Granting and removing the `admin` role, with an audit entry for each change. Used by the
`python -m server users promote|demote` command and by Firebase sign-in for `ADMIN_EMAILS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg
import structlog

from core.errors import NotFound
from storage.audit import AuditStore
from storage.users import UserRow, UserStore

log = structlog.get_logger(__name__)
Role = Literal["user", "admin"]


@dataclass(frozen=True)
class RoleChange:
    user: UserRow
    changed: bool


async def set_role(conn: asyncpg.Connection, user: UserRow, role: Role, *, via: str) -> RoleChange:
    """Give `user` the role (in the caller's transaction); `via` says who decided, for the audit log."""
    if user.role == role:
        return RoleChange(user, changed=False)
    updated = await UserStore().set_role(conn, user.id, role)
    if updated is None:
        raise NotFound("user not found")
    await AuditStore().record(
        conn,
        actor_id=None,
        action="user.promote" if role == "admin" else "user.demote",
        target_type="user",
        target_id=str(user.id),
        details={"via": via},
    )
    log.info("role changed", user_id=str(user.id), role=role, via=via)
    return RoleChange(updated, changed=True)


async def set_role_by_email(pool: asyncpg.Pool, email: str, role: Role, *, via: str) -> RoleChange:
    """Raises NotFound when no account has this email (case-insensitive)."""
    async with pool.acquire() as conn, conn.transaction():
        user = await UserStore().by_email(conn, email)
        if user is None:
            raise NotFound(f"no account with the email {email}")
        return await set_role(conn, user, role, via=via)
