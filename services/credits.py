"""CreditService: balances and the ledger. Other services that move credits inside their own transaction
(a message beyond the quota, a marketplace purchase, a Stripe credit pack) call `apply_in` with their
connection and `notify` after commit."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from core.entities import CreditChange, LedgerEntry, Principal
from core.errors import AppError, Forbidden, NotFound
from core.events import CreditsEvent, Events
from services.notices import Notice, send_notices
from services.notifications import NotificationService
from storage.audit import AuditStore
from storage.credits import CreditStore, InsufficientCredits
from storage.users import UserStore


class CreditService:
    def __init__(self, *, pool: asyncpg.Pool, events: Events, notifications: NotificationService | None = None) -> None:
        self._pool = pool
        self._events = events
        self._notifications = notifications
        self._store = CreditStore()
        self._users = UserStore()
        self._audit = AuditStore()

    async def apply_in(self, conn: asyncpg.Connection, change: CreditChange) -> tuple[int, bool]:
        """Inside the caller's transaction. Raises AppError `insufficient_credits` (402) when spending
        more than the balance. Returns (balance, applied); applied is False for a repeated key."""
        try:
            return await self._store.apply(conn, change)
        except InsufficientCredits as err:
            raise AppError("not enough credits", code="insufficient_credits", status=402) from err

    async def notify(self, user_id: UUID, balance: int) -> None:
        await self._events.to_user(user_id, CreditsEvent(balance=balance))

    async def admin_grant(
        self, actor: Principal, user_id: UUID, *, amount: int, idempotency_key: str, note: str | None
    ) -> tuple[int, bool]:
        """Grant (or, negative, take back) credits; audited; a repeated key changes nothing."""
        if not actor.is_admin:
            raise Forbidden("admin only")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await self._users.get(conn, user_id) is None:
                    raise NotFound("user not found")
                balance, applied = await self.apply_in(
                    conn,
                    CreditChange(
                        user_id=user_id,
                        delta=amount,
                        reason="admin_grant",
                        idempotency_key=f"admin:{idempotency_key}",
                        ref_type="admin",
                        ref_id=str(actor.id),
                    ),
                )
                if applied:
                    await self._audit.record(
                        conn,
                        actor_id=actor.id,
                        action="credits.grant",
                        target_type="user",
                        target_id=str(user_id),
                        details={"amount": amount, "note": note, "idempotency_key": idempotency_key},
                    )
        except asyncpg.UniqueViolationError:
            return await self.balance(user_id), False
        if applied:
            await self.notify(user_id, balance)
            if amount > 0:
                notice = Notice(
                    user_id,
                    "credits",
                    f"{amount} credits added",
                    f"Your balance is now {balance} credits.",
                    {"amount": amount, "balance": balance},
                )
                await send_notices(self._notifications, notice)
        return balance, applied

    async def balance(self, user_id: UUID) -> int:
        async with self._pool.acquire() as conn:
            return await self._store.balance(conn, user_id)

    async def ledger(self, user_id: UUID, *, before_id: int | None, limit: int) -> list[LedgerEntry]:
        async with self._pool.acquire() as conn:
            return await self._store.ledger(conn, user_id, before_id=before_id, limit=limit)
