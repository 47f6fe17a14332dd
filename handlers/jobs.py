"""REST: /api/v1/jobs — the polling fallback for `job:progress`: my jobs, one job, cancel. A job is its
owner's alone: every other user gets 404."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from core.entities import Principal
from core.pages import Keyset, decode_cursor, encode_cursor
from core.wire import JobOut, JobStatus
from handlers.api import Api, path_uuid
from handlers.keys import JOB_SERVICE
from handlers.schemas import CursorParam, Strict

api = Api("jobs")
P = "/api/v1/jobs"


class JobListQuery(Strict):
    status: JobStatus | None = Field(default=None, description="Only jobs in this state")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


@api.route("GET", P, summary="My background jobs, newest first", query=JobListQuery, response=JobPage)
async def list_jobs(request: web.Request, user: Principal, query: JobListQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    page = await request.app[JOB_SERVICE].list(user.id, status=query.status, before=before, limit=query.limit)
    cursor = None
    if page.more:
        last = page.items[-1]
        cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id))
    return {"items": [JobOut.model_validate(job) for job in page.items], "next_cursor": cursor}


@api.route("GET", f"{P}/{{id}}", summary="One of my jobs", response=JobOut, errors=(404,))
async def get_job(request: web.Request, user: Principal) -> JobOut:
    """Poll this while no socket is connected; `result.url` is a signed download link where the job made a
    file (it works without a token until `result.expires_at`)."""
    return JobOut.model_validate(await request.app[JOB_SERVICE].get(user.id, path_uuid(request)))


@api.route("POST", f"{P}/{{id}}/cancel", summary="Cancel one of my jobs", response=JobOut, errors=(404,))
async def cancel_job(request: web.Request, user: Principal) -> JobOut:
    """A queued job is `cancelled` at once and never runs. A running one answers `running` with the cancel
    requested, and ends `cancelled` within about a second (a `job:progress` event says so), leaving no result
    file. A finished job is answered as it is."""
    return JobOut.model_validate(await request.app[JOB_SERVICE].cancel(user.id, path_uuid(request)))
