"""UsageService: the read side of usage — daily history and analytics (trends, peak hours)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from core.entities import Principal
from core.timefmt import iso
from services.quota import local_day
from storage.usage import DayUsage, UsageStore


@dataclass(frozen=True)
class ExportFile:
    data: bytes
    content_type: str
    filename: str


class UsageService:
    def __init__(self, *, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._store = UsageStore()

    async def history(self, user: Principal, *, days: int) -> list[DayUsage]:
        return await self._history(user.id, user.timezone, days)

    async def _history(self, user_id: UUID, timezone: str, days: int) -> list[DayUsage]:
        today, _ = local_day(timezone)
        async with self._pool.acquire() as conn:
            return await self._store.history(conn, user_id, today - timedelta(days=days - 1))

    async def export(self, user_id: UUID, timezone: str, *, days: int, fmt: str) -> ExportFile:
        """The same numbers as `history`, as a file: CSV (a header row, one row per day, RFC 4180) or JSON
        `{"user_id", "generated_at", "days": [...]}`. Used by the request and by the export job."""
        rows = await self._history(user_id, timezone, days)
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%d")
        if fmt == "json":
            payload = {
                "user_id": str(user_id),
                "generated_at": iso(now),
                "days": [{**r.__dict__, "day": r.day.isoformat()} for r in rows],
            }
            data = json.dumps(payload, indent=2).encode()
            return ExportFile(data, "application/json", f"parlor-usage-{stamp}.json")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["day", "messages", "credit_messages", "refunded"])
        for r in rows:
            writer.writerow([r.day.isoformat(), r.messages, r.credit_messages, r.refunded])
        return ExportFile(out.getvalue().encode(), "text/csv", f"parlor-usage-{stamp}.csv")

    async def analytics(self, user: Principal, *, days: int) -> dict[str, Any]:
        today, _ = local_day(user.timezone)
        since = datetime.now(UTC) - timedelta(days=days)
        async with self._pool.acquire() as conn:
            rows = await self._store.history(conn, user.id, today - timedelta(days=max(days, 14) - 1))
            hours = await self._store.by_hour(conn, user.id, user.timezone, since)
            tokens, replies = await self._store.tokens(conn, user.id, since)
        window = [r for r in rows if r.day > today - timedelta(days=days)]
        total = sum(r.messages + r.credit_messages for r in window)
        last7 = sum(r.messages + r.credit_messages for r in rows if r.day > today - timedelta(days=7))
        prev7 = sum(
            r.messages + r.credit_messages
            for r in rows
            if today - timedelta(days=14) < r.day <= today - timedelta(days=7)
        )
        peak = sorted(hours.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return {
            "days": days,
            "total_messages": total,
            "credit_messages": sum(r.credit_messages for r in window),
            "daily_average": round(total / days, 2),
            "active_days": sum(1 for r in window if r.messages + r.credit_messages),
            "trend": {
                "last_7_days": last7,
                "previous_7_days": prev7,
                "change_pct": round((last7 - prev7) * 100 / prev7, 1) if prev7 else None,
            },
            "peak_hours": [{"hour": h, "messages": n} for h, n in peak],
            "replies": replies,
            "tokens": tokens,
        }
