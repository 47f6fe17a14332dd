"""QuotaService: what an AI message costs. Within the plan's daily quota it is free; beyond it one credit
is spent; with neither the send is refused (`quota_exceeded`) before any provider call. The charge is
made in the send's own transaction; a reply that fails (or is stopped before its first token) gives
back exactly what its messages spent, once. This is the one place where debit and refund happen."""

from __future__ import annotations

import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from core.entities import CreditChange
from core.errors import AppError
from core.events import Events, QuotaEvent
from core.timefmt import iso
from services.credits import CreditService
from services.plans import Plans
from storage.usage import ClaimedRefund, UsageStore

log = structlog.get_logger(__name__)
USER_PLAN = "SELECT plan, timezone FROM users WHERE id = $1"


class QuotaExceeded(AppError):
    status = 402
    code = "quota_exceeded"


@dataclass(frozen=True)
class Charge:
    user_id: UUID
    kind: str  # quota | credit | unlimited
    remaining: int | None  # messages left today within the quota (None: no daily cap)
    resets_at: datetime
    balance: int | None  # the credit balance when a credit was spent


def local_day(timezone: str, now: datetime | None = None) -> tuple[date, datetime]:
    """The user's current day and when it ends (their next midnight), in UTC."""
    try:
        tz = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    local = (now or datetime.now(UTC)).astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    return local.date(), midnight.astimezone(UTC)


class QuotaService:
    def __init__(self, *, plans: Plans, credits: CreditService, events: Events, pool: asyncpg.Pool) -> None:
        self._plans = plans
        self._credits = credits
        self._events = events
        self._pool = pool
        self._usage = UsageStore()

    async def charge_in(self, conn: asyncpg.Connection, user_id: UUID, message_id: UUID, *, turn: int = 0) -> Charge:
        """Inside the send's transaction, after the message row is inserted (turn 0); or a reply's
        regeneration or continuation (turn: the reply's rev as that work starts). Raises QuotaExceeded."""
        record = await conn.fetchrow(USER_PLAN, user_id)
        limits = self._plans.limits(record["plan"])
        day, resets_at = local_day(record["timezone"])
        if limits.daily_messages <= 0:
            await self._usage.count_unlimited(conn, user_id, day)
            await self._usage.record_charge(
                conn, message_id=message_id, user_id=user_id, kind="unlimited", day=day, turn=turn
            )
            return Charge(user_id, "unlimited", None, resets_at, None)
        used = await self._usage.count_in_quota(conn, user_id, day, limits.daily_messages)
        if used is not None:
            await self._usage.record_charge(
                conn, message_id=message_id, user_id=user_id, kind="quota", day=day, turn=turn
            )
            return Charge(user_id, "quota", limits.daily_messages - used, resets_at, None)
        try:
            balance, _ = await self._credits.apply_in(
                conn,
                CreditChange(
                    user_id=user_id,
                    delta=-1,
                    reason="message",
                    idempotency_key=f"message:{message_id}" + (f":{turn}" if turn else ""),
                    ref_type="message",
                    ref_id=str(message_id),
                ),
            )
        except AppError as err:
            raise QuotaExceeded(
                f"today's {limits.daily_messages} messages are used and there are no credits left",
                details={"resets_at": iso(resets_at), "daily_limit": limits.daily_messages},
            ) from err
        await self._usage.count_credit(conn, user_id, day)
        await self._usage.record_charge(conn, message_id=message_id, user_id=user_id, kind="credit", day=day, turn=turn)
        return Charge(user_id, "credit", 0, resets_at, balance)

    async def announce(self, charge: Charge) -> None:
        """After commit: tell the user's sockets what changed."""
        if charge.kind != "unlimited":
            await self._events.to_user(
                charge.user_id, QuotaEvent(remaining=charge.remaining, resets_at=charge.resets_at)
            )
        if charge.balance is not None:
            await self._credits.notify(charge.user_id, charge.balance)

    async def refund(self, message_ids: list[UUID]) -> int:
        """Give back what these messages' sends spent (each at most once); returns how many were refunded."""
        if not message_ids:
            return 0
        return await self._refund(lambda conn: self._usage.claim_refunds(conn, message_ids))

    async def refund_turn(self, message_id: UUID, turn: int) -> int:
        """Give back what one regeneration or continuation of a reply spent (at most once)."""
        return await self._refund(lambda conn: self._usage.claim_turn_refund(conn, message_id, turn))

    async def _refund(self, claim: Callable[[asyncpg.Connection], Awaitable[list[ClaimedRefund]]]) -> int:
        balances: dict[UUID, int] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await claim(conn)
            for refund in claimed:
                if refund.kind == "credit":
                    balance, _ = await self._credits.apply_in(
                        conn,
                        CreditChange(
                            user_id=refund.user_id,
                            delta=1,
                            reason="refund",
                            idempotency_key=f"refund:{refund.message_id}" + (f":{refund.turn}" if refund.turn else ""),
                            ref_type="message",
                            ref_id=str(refund.message_id),
                        ),
                    )
                    balances[refund.user_id] = balance
                await self._usage.uncount(conn, refund)
        for user_id in {r.user_id for r in claimed}:
            status = await self.current(user_id)
            if status["daily_limit"]:
                await self._events.to_user(
                    user_id, QuotaEvent(remaining=status["remaining"], resets_at=status["resets_at"])
                )
            if user_id in balances:
                await self._credits.notify(user_id, balances[user_id])
        if claimed:
            log.info("charges refunded", count=len(claimed))
        return len(claimed)

    async def current(self, user_id: UUID) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            record = await conn.fetchrow(USER_PLAN, user_id)
            day, resets_at = local_day(record["timezone"])
            usage = await self._usage.day(conn, user_id, day)
            balance = int(await conn.fetchval("SELECT credit_balance FROM users WHERE id = $1", user_id))
        limit = self._plans.limits(record["plan"]).daily_messages
        return {
            "plan": record["plan"],
            "day": day.isoformat(),
            "daily_limit": limit or None,
            "used_today": usage.messages,
            "credit_messages_today": usage.credit_messages,
            "remaining": max(limit - usage.messages, 0) if limit else None,
            "resets_at": iso(resets_at),
            "credits": balance,
        }
