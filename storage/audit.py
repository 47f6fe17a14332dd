"""AuditStore: an append-only record of every admin action."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

INSERT = """
INSERT INTO audit_log (actor_id, action, target_type, target_id, details)
VALUES ($1, $2, $3, $4, $5)
"""
PAGE = """
SELECT id, actor_id, action, target_type, target_id, details, created_at FROM audit_log
WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2
"""


@dataclass(frozen=True)
class AuditRow:
    id: int
    actor_id: UUID | None
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    created_at: datetime


class AuditStore:
    async def record(
        self,
        conn: asyncpg.Connection,
        *,
        actor_id: UUID | None,
        action: str,
        target_type: str,
        target_id: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        await conn.execute(INSERT, actor_id, action, target_type, target_id, details or {})

    async def page(self, conn: asyncpg.Connection, *, before_id: int | None, limit: int) -> list[AuditRow]:
        return [AuditRow(**dict(r)) for r in await conn.fetch(PAGE, before_id, limit)]
