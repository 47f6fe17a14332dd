"""REST: /api/v1/notifications (list, unread count, mark read, read all, per-kind preferences) and
/api/v1/devices (register and remove push devices). A notification or device is its owner's alone: every
other user gets 404."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from core.entities import Principal
from core.errors import ValidationFailed
from core.pages import Keyset, decode_cursor, encode_cursor
from core.wire import DevicePlatform, KindPreference, NotificationKind, NotificationOut, PreferencesOut, Timestamp
from handlers.api import Api, path_uuid
from handlers.keys import NOTIFICATION_SERVICE
from handlers.schemas import CursorParam, Patch, Strict

api = Api("notifications")
P = "/api/v1/notifications"
D = "/api/v1/devices"
# FCM registration tokens are a few hundred characters; the bound only stops absurd bodies.
DEVICE_TOKEN_MAX = 4096
DeviceToken = Annotated[str, StringConstraints(min_length=1, max_length=DEVICE_TOKEN_MAX, pattern=r"^\S+$")]


class NotificationListQuery(Strict):
    unread: bool = Field(default=False, description="true: only unread notifications")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: CursorParam = None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


class CountOut(BaseModel):
    count: int


class UpdatedOut(BaseModel):
    updated: int = Field(description="How many notifications were unread and are now read")


class KindPreferencePatch(Patch):
    in_app: bool | None = None
    push: bool | None = None


class PreferencesPatch(Strict):
    kinds: dict[NotificationKind, KindPreferencePatch] = Field(
        description="The kinds to change; a kind or a field left out is left as it is"
    )


class DeviceIn(Strict):
    token: DeviceToken = Field(description="The FCM registration token")
    platform: DevicePlatform


class DeviceOut(BaseModel):
    token: str
    platform: DevicePlatform
    created_at: Timestamp = Field(description="When this user registered the token")
    last_seen_at: Timestamp = Field(description="The token's latest registration")


def _preferences(prefs: dict[str, tuple[bool, bool]]) -> PreferencesOut:
    return PreferencesOut.model_validate(
        {"kinds": {kind: KindPreference(in_app=in_app, push=push) for kind, (in_app, push) in prefs.items()}}
    )


@api.route("GET", P, summary="My notifications, newest first", query=NotificationListQuery, response=NotificationPage)
async def list_notifications(request: web.Request, user: Principal, query: NotificationListQuery) -> dict[str, Any]:
    position = decode_cursor(query.cursor, Keyset)
    before = (position.created_at, position.id) if position is not None else None
    page = await request.app[NOTIFICATION_SERVICE].list(
        user.id, unread_only=query.unread, before=before, limit=query.limit
    )
    cursor = None
    if page.more:
        last = page.items[-1]
        cursor = encode_cursor(Keyset(created_at=last.created_at, id=last.id))
    return {"items": [NotificationOut.model_validate(n) for n in page.items], "next_cursor": cursor}


@api.route("GET", f"{P}/unread-count", summary="How many of my notifications are unread", response=CountOut)
async def unread_count(request: web.Request, user: Principal) -> dict[str, Any]:
    return {"count": await request.app[NOTIFICATION_SERVICE].unread_count(user.id)}


@api.route(
    "POST", f"{P}/{{id}}/read", summary="Mark one of my notifications read", response=NotificationOut, errors=(404,)
)
async def mark_read(request: web.Request, user: Principal) -> NotificationOut:
    """Marking it again keeps the first `read_at`."""
    notification = await request.app[NOTIFICATION_SERVICE].mark_read(user.id, path_uuid(request))
    return NotificationOut.model_validate(notification)


@api.route("POST", f"{P}/read-all", summary="Mark all my notifications read", response=UpdatedOut)
async def read_all(request: web.Request, user: Principal) -> dict[str, Any]:
    return {"updated": await request.app[NOTIFICATION_SERVICE].read_all(user.id)}


@api.route("GET", f"{P}/preferences", summary="My notification preferences, per kind", response=PreferencesOut)
async def get_preferences(request: web.Request, user: Principal) -> PreferencesOut:
    """Every kind, with the defaults (`in_app` and `push` on) for kinds never changed."""
    return _preferences(await request.app[NOTIFICATION_SERVICE].preferences(user.id))


@api.route(
    "PATCH",
    f"{P}/preferences",
    summary="Change my notification preferences",
    body=PreferencesPatch,
    response=PreferencesOut,
)
async def update_preferences(request: web.Request, user: Principal, body: PreferencesPatch) -> PreferencesOut:
    """`{"kinds": {"credits": {"push": false}}}`. `in_app: false` stops storing the kind (no record, no
    event, no push); `push: false` only stops its pushes. Answers every kind, like GET."""
    changes = {kind: (pref.in_app, pref.push) for kind, pref in body.kinds.items()}
    return _preferences(await request.app[NOTIFICATION_SERVICE].update_preferences(user.id, changes))


@api.route(
    "POST",
    D,
    summary="Register a push device",
    body=DeviceIn,
    response=DeviceOut,
    status=201,
    other_statuses={200: DeviceOut},
)
async def register_device(request: web.Request, user: Principal, body: DeviceIn) -> web.Response:
    """Idempotent per token: 201 when the token is new to me (also one another user had registered: it
    moves to me), 200 when it was mine already."""
    device, fresh = await request.app[NOTIFICATION_SERVICE].register_device(
        user.id, token=body.token, platform=body.platform
    )
    out = DeviceOut(
        token=device.token,
        platform=body.platform,
        created_at=device.created_at,
        last_seen_at=device.last_seen_at,
    )
    return web.Response(body=out.model_dump_json(), status=201 if fresh else 200, content_type="application/json")


@api.route(
    "DELETE",
    f"{D}/{{token}}",
    summary="Remove one of my push devices",
    status=204,
    errors=(404,),
    path_params={"token": DeviceToken},
)
async def delete_device(request: web.Request, user: Principal) -> None:
    token = request.match_info["token"]
    if len(token) > DEVICE_TOKEN_MAX:
        raise ValidationFailed(
            f"token: at most {DEVICE_TOKEN_MAX} characters", details=[{"field": "token", "message": "too long"}]
        )
    await request.app[NOTIFICATION_SERVICE].delete_device(user.id, token)
