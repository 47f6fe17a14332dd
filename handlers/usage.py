"""REST: /api/v1/usage (current, daily history, analytics, export) and /api/v1/credits (balance, ledger)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core.entities import Principal
from core.pages import IdPosition, decode_cursor, encode_cursor
from core.wire import JobOut, LedgerEntryOut
from handlers.api import Api, model_response
from handlers.keys import (
    BILLING_SETTINGS,
    CREDIT_SERVICE,
    FILES_SERVICE,
    QUOTA_SERVICE,
    USAGE_EXPORTS,
    USAGE_SERVICE,
)
from handlers.schemas import CursorParam, Strict

api = Api("usage")


class CurrentUsage(BaseModel):
    plan: str
    day: date
    daily_limit: int | None
    used_today: int
    credit_messages_today: int
    remaining: int | None
    resets_at: datetime
    credits: int
    storage_used: int = Field(description="Bytes of my files counted against the plan (thumbnails included)")
    storage_limit: int | None = Field(description="Bytes the plan may store; null = unlimited")


class DaysQuery(Strict):
    days: int = Field(default=30, ge=1, le=366)


class DayRow(BaseModel):
    day: date
    messages: int
    credit_messages: int
    refunded: int


class History(BaseModel):
    items: list[DayRow]
    next_cursor: str | None = None


class Trend(BaseModel):
    last_7_days: int
    previous_7_days: int
    change_pct: float | None


class HourRow(BaseModel):
    hour: int
    messages: int


class Analytics(BaseModel):
    days: int
    total_messages: int
    credit_messages: int
    daily_average: float
    active_days: int
    trend: Trend
    peak_hours: list[HourRow]
    replies: int
    tokens: int


class UsageExport(BaseModel):
    """The JSON form of POST /usage/export (format=json)."""

    user_id: UUID
    generated_at: datetime
    days: list[DayRow]


class ExportIn(Strict):
    format: Literal["csv", "json"]
    days: int = Field(default=90, ge=1, le=366)
    run_async: bool = Field(
        default=False, alias="async", description="true: answer 202 with a job whose result links to the file"
    )


class Balance(BaseModel):
    balance: int


class LedgerQuery(Strict):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: CursorParam = None


class LedgerPage(BaseModel):
    items: list[LedgerEntryOut]
    next_cursor: str | None


@api.route("GET", "/api/v1/usage/current", summary="Today's quota, usage and credits", response=CurrentUsage)
async def current(request: web.Request, user: Principal) -> dict[str, Any]:
    """`remaining` and `daily_limit` are null on plans without a daily cap; the day is the user's
    (profile time zone) and resets at their midnight (`resets_at`, UTC)."""
    files = request.app[FILES_SERVICE]
    usage = await request.app[QUOTA_SERVICE].current(user.id)
    return {
        **usage,
        "storage_used": await files.storage_used(user.id),
        "storage_limit": files.storage_limit(user.plan) or None,
    }


@api.route("GET", "/api/v1/usage/history", summary="AI messages per day", query=DaysQuery, response=History)
async def history(request: web.Request, user: Principal, query: DaysQuery) -> dict[str, Any]:
    rows = await request.app[USAGE_SERVICE].history(user, days=query.days)
    return {"items": [r.__dict__ for r in rows], "next_cursor": None}


@api.route("GET", "/api/v1/usage/analytics", summary="Trends and peak hours", query=DaysQuery, response=Analytics)
async def analytics(request: web.Request, user: Principal, query: DaysQuery) -> dict[str, Any]:
    return await request.app[USAGE_SERVICE].analytics(user, days=query.days)


@api.route(
    "POST",
    "/api/v1/usage/export",
    summary="Daily usage as CSV or JSON (a download, or a job with `async: true`)",
    body=ExportIn,
    response=str,
    content_type="text/csv",
    other_content={"application/json": UsageExport},
    other_statuses={202: JobOut},
    errors=(429,),
)
async def export(request: web.Request, user: Principal, body: ExportIn) -> web.Response:
    """The same numbers as /usage/history, as a download: CSV (header row, one row per day, RFC 4180)
    or JSON `{"user_id", "generated_at", "days": [...]}`. With `async: true` the answer is 202 with a job
    (`job:progress` events, GET /jobs/{id}) whose result links to the same file."""
    if body.run_async:
        job = await request.app[USAGE_EXPORTS].start(user, fmt=body.format, days=body.days)
        return model_response(JobOut.model_validate(job), status=202)
    export = await request.app[USAGE_SERVICE].export(user.id, user.timezone, days=body.days, fmt=body.format)
    return web.Response(
        body=export.data,
        content_type=export.content_type,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


@api.route("GET", "/api/v1/credits/balance", summary="My credit balance", response=Balance)
async def balance(request: web.Request, user: Principal) -> dict[str, Any]:
    return {"balance": await request.app[CREDIT_SERVICE].balance(user.id)}


@api.route(
    "GET", "/api/v1/credits/ledger", summary="My credit ledger, newest first", query=LedgerQuery, response=LedgerPage
)
async def ledger(request: web.Request, user: Principal, query: LedgerQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, IdPosition)
    before_id = position.id if position is not None else None
    entries = await request.app[CREDIT_SERVICE].ledger(user.id, before_id=before_id, limit=query.limit)
    cursor = encode_cursor(IdPosition(id=entries[-1].id)) if len(entries) == query.limit else None
    return {"items": [LedgerEntryOut.model_validate(e) for e in entries], "next_cursor": cursor}


class Pack(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    credits: int
    price_cents: int
    currency: str


class Packs(BaseModel):
    items: list[Pack]


@api.route("GET", "/api/v1/credits/packs", summary="Credit packs for sale", response=Packs)
async def packs(request: web.Request, user: Principal) -> dict[str, Any]:
    """Buy one with `POST /api/v1/credits/checkout {pack}` (Stripe Checkout)."""
    return {"items": [Pack.model_validate(p) for p in request.app[BILLING_SETTINGS].credit_packs]}
