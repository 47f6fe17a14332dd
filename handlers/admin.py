"""REST: /api/v1/admin — user administration (more admin areas land with their features)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from core.entities import Principal
from core.pages import IdPosition, Keyset, decode_cursor, encode_cursor
from core.validation import UtcDatetime
from core.wire import AuditEntryOut, JobOut, UserOut
from handlers.api import Api, model_response, path_uuid
from handlers.keys import ADMIN_SERVICE, BROADCASTS, CREDIT_SERVICE, SUBSCRIPTION_SERVICE
from handlers.schemas import CursorParam, Strict

api = Api("admin")
P = "/api/v1/admin"


class BanIn(Strict):
    reason: str | None = Field(default=None, max_length=500)


def _not_zero(amount: int) -> int:
    if amount == 0:
        raise ValueError("must not be 0")
    return amount


class GrantIn(Strict):
    amount: Annotated[
        int,
        Field(ge=-1_000_000, le=1_000_000, description="Credits to add (negative: to take back); not 0"),
        AfterValidator(_not_zero),
        WithJsonSchema(
            {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000, "not": {"const": 0}},
            mode="validation",
        ),
    ]
    idempotency_key: str = Field(min_length=1, max_length=100)
    note: str | None = Field(default=None, max_length=500)


class GrantOut(BaseModel):
    balance: int
    applied: bool


class UserQuery(Strict):
    q: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: CursorParam = None


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class AuditQuery(Strict):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: CursorParam = None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


@api.route("GET", f"{P}/users", summary="Search users (admin)", query=UserQuery, response=UserPage)
async def list_users(request: web.Request, user: Principal, query: UserQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    rows = await request.app[ADMIN_SERVICE].search_users(user, query=query.q, before=before, limit=query.limit)
    last = rows[-1] if len(rows) == query.limit else None
    cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id)) if last else None
    return {"items": [UserOut.model_validate(r) for r in rows], "next_cursor": cursor}


@api.route("GET", f"{P}/users/{{id}}", summary="One user (admin)", response=UserOut, errors=(404,))
async def get_user(request: web.Request, user: Principal) -> UserOut:
    return UserOut.model_validate(await request.app[ADMIN_SERVICE].get_user(user, path_uuid(request)))


@api.route("POST", f"{P}/users/{{id}}/ban", summary="Ban a user (admin)", body=BanIn, response=UserOut, errors=(404,))
async def ban_user(request: web.Request, user: Principal, body: BanIn) -> UserOut:
    """The user's sessions end at once and their sockets are closed."""
    target = await request.app[ADMIN_SERVICE].set_ban(user, path_uuid(request), banned=True, reason=body.reason)
    return UserOut.model_validate(target)


@api.route("POST", f"{P}/users/{{id}}/unban", summary="Lift a ban (admin)", response=UserOut, errors=(404,))
async def unban_user(request: web.Request, user: Principal) -> UserOut:
    target = await request.app[ADMIN_SERVICE].set_ban(user, path_uuid(request), banned=False, reason=None)
    return UserOut.model_validate(target)


@api.route("GET", f"{P}/audit-log", summary="Admin actions, newest first (admin)", query=AuditQuery, response=AuditPage)
async def audit_log(request: web.Request, user: Principal, query: AuditQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, IdPosition)
    before_id = position.id if position is not None else None
    rows = await request.app[ADMIN_SERVICE].audit_log(user, before_id=before_id, limit=query.limit)
    cursor = encode_cursor(IdPosition(id=rows[-1].id)) if len(rows) == query.limit else None
    return {"items": [AuditEntryOut.model_validate(r) for r in rows], "next_cursor": cursor}


@api.route(
    "POST",
    f"{P}/users/{{id}}/credits",
    summary="Grant credits (admin)",
    body=GrantIn,
    response=GrantOut,
    errors=(402, 404),
)
async def grant_credits(request: web.Request, user: Principal, body: GrantIn) -> dict[str, Any]:
    """Idempotent by `idempotency_key` (a retried grant is `applied: false`); a negative amount takes
    credits back but never below zero (402 `insufficient_credits`). Audited."""
    balance, applied = await request.app[CREDIT_SERVICE].admin_grant(
        user, path_uuid(request), amount=body.amount, idempotency_key=body.idempotency_key, note=body.note
    )
    return {"balance": balance, "applied": applied}


class PlanIn(Strict):
    plan: Literal["free", "premium"]
    until: UtcDatetime | None = None


class AdminPlanOut(BaseModel):
    """The plan a user has after an admin grant (not the catalogue's PlanOut)."""

    user_id: UUID
    plan: str


@api.route(
    "POST",
    f"{P}/users/{{id}}/plan",
    summary="Grant or end an admin plan (admin)",
    body=PlanIn,
    response=AdminPlanOut,
    errors=(404,),
)
async def set_plan(request: web.Request, user: Principal, body: PlanIn) -> dict[str, Any]:
    """`premium` (until a time, or for good) as an admin subscription; `free` ends that grant. Paid
    Stripe/Google Play subscriptions are untouched, so a paying user stays premium. Audited."""
    target_id = path_uuid(request)
    admin = request.app[ADMIN_SERVICE]
    admin.require_admin(user)
    change = await request.app[SUBSCRIPTION_SERVICE].set_admin_plan(target_id, plan=body.plan, until=body.until)
    await admin.audit(
        user,
        action="user.plan",
        target_id=str(target_id),
        details={"plan": body.plan, "until": body.until.isoformat() if body.until else None, "result": change.after},
    )
    return {"user_id": str(target_id), "plan": change.after}


class BroadcastIn(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)
    audience: Literal["all", "premium", "free"] = "all"


@api.route(
    "POST",
    f"{P}/notifications",
    summary="Broadcast a notification to every user, or every premium or free user (admin; a job)",
    body=BroadcastIn,
    response=JobOut,
    status=202,
    errors=(403, 429),
)
async def broadcast(request: web.Request, user: Principal, body: BroadcastIn) -> web.Response:
    """Answers 202 with the job at once; the job stores one `broadcast` notification per user (banned users
    left out; users who turned `in_app` off for broadcasts skipped), sends each live, pushes to users with no
    socket, and reports progress per batch of 500. Audited."""
    job = await request.app[BROADCASTS].start(user, title=body.title, body=body.body, audience=body.audience)
    return model_response(JobOut.model_validate(job), status=202)
