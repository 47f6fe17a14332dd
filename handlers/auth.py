"""REST: /api/v1/auth — register, login, refresh, logout, Firebase, profile, password."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import EmailStr, Field

from core import limits
from core.entities import Principal
from core.wire import UserOut
from handlers.api import Api, client_ip
from handlers.keys import AUTH_SERVICE
from handlers.schemas import AuthSessionOut, Strict, TimeZoneName
from services.auth import Session

api = Api("auth")
P = "/api/v1/auth"
Password = Field(min_length=limits.PASSWORD_MIN, max_length=limits.PASSWORD_MAX)


class RegisterIn(Strict):
    email: EmailStr = Field(max_length=limits.EMAIL_MAX)
    password: str = Password
    display_name: str | None = Field(default=None, min_length=1, max_length=limits.DISPLAY_NAME_MAX)


class LoginIn(Strict):
    email: EmailStr = Field(max_length=limits.EMAIL_MAX)
    password: str = Field(min_length=1, max_length=limits.PASSWORD_MAX)


class RefreshIn(Strict):
    refresh_token: str = Field(min_length=1, max_length=512)


class FirebaseIn(Strict):
    id_token: str = Field(min_length=1, max_length=8192)


class FirebaseSessionOut(AuthSessionOut):
    created: bool


def _left_out_keeps(schema: dict[str, Any]) -> None:
    """No default in the document: left out keeps the picture, while null removes it."""
    schema.pop("default", None)


class ProfileIn(Strict):
    """A field left out (or null) is left as it is, except `avatar_file_id`, where null removes the picture."""

    display_name: str | None = Field(default=None, min_length=1, max_length=limits.DISPLAY_NAME_MAX)
    timezone: TimeZoneName | None = None
    avatar_file_id: UUID | None = Field(
        default=None,
        description="One of my own image files (uploaded to /files): 404 for anyone else's, 422 if not an "
        "image; null removes the picture",
        json_schema_extra=_left_out_keeps,
    )


class PasswordIn(Strict):
    current_password: str | None = Field(default=None, max_length=limits.PASSWORD_MAX)
    new_password: str = Password


def session_body(session: Session) -> dict[str, Any]:
    return {
        "user": UserOut.model_validate(session.user),
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "expires_in": session.expires_in,
    }


@api.route(
    "POST",
    f"{P}/register",
    summary="Create an account",
    body=RegisterIn,
    response=AuthSessionOut,
    status=201,
    auth=False,
    errors=(409, 429),
)
async def register(request: web.Request, body: RegisterIn) -> dict[str, Any]:
    """Limited per client address (REGISTER_RATE_PER_HOUR). The account gets the `user` role, whatever
    the email: admins are made by `python -m server users promote EMAIL` (see docs/auth.md)."""
    session = await request.app[AUTH_SERVICE].register(
        email=str(body.email), password=body.password, display_name=body.display_name, ip=client_ip(request)
    )
    return session_body(session)


@api.route(
    "POST",
    f"{P}/login",
    summary="Sign in with email and password",
    body=LoginIn,
    response=AuthSessionOut,
    auth=False,
    errors=(401, 403, 429),
)
async def login(request: web.Request, body: LoginIn) -> dict[str, Any]:
    session = await request.app[AUTH_SERVICE].login(
        email=str(body.email), password=body.password, ip=client_ip(request)
    )
    return session_body(session)


@api.route(
    "POST",
    f"{P}/refresh",
    summary="Rotate a refresh token",
    body=RefreshIn,
    response=AuthSessionOut,
    auth=False,
    errors=(401, 403),
)
async def refresh(request: web.Request, body: RefreshIn) -> dict[str, Any]:
    """The presented token stops working. Presented again within REFRESH_REUSE_GRACE_SECONDS it returns
    the same new pair; later, it revokes the whole session (`token_reused`): every refresh token of the
    family, and its access tokens (`session_ended`)."""
    return session_body(await request.app[AUTH_SERVICE].refresh(body.refresh_token))


@api.route("POST", f"{P}/logout", summary="End this session (revoke the refresh token)", body=RefreshIn, status=204)
async def logout(request: web.Request, user: Principal, body: RefreshIn) -> None:
    """The refresh token's session ends: its refresh tokens and its access tokens stop working."""
    await request.app[AUTH_SERVICE].logout(user, body.refresh_token)


@api.route("POST", f"{P}/logout-all", summary="End every session of this account", status=204)
async def logout_all(request: web.Request, user: Principal) -> None:
    """Revokes every refresh token and invalidates every access token already issued."""
    await request.app[AUTH_SERVICE].logout_all(user)


@api.route(
    "POST",
    f"{P}/firebase",
    summary="Exchange a Firebase ID token for Parlor tokens",
    body=FirebaseIn,
    response=FirebaseSessionOut,
    auth=False,
    errors=(401, 403, 409, 429, 503),
)
async def firebase_sign_in(request: web.Request, body: FirebaseIn) -> dict[str, Any]:
    session, created = await request.app[AUTH_SERVICE].firebase_sign_in(body.id_token, ip=client_ip(request))
    return {**session_body(session), "created": created}


@api.route(
    "POST",
    f"{P}/link/firebase",
    summary="Link a Google (Firebase) account to this account",
    body=FirebaseIn,
    response=UserOut,
    errors=(409, 503),
)
async def link_firebase(request: web.Request, user: Principal, body: FirebaseIn) -> UserOut:
    return UserOut.model_validate(await request.app[AUTH_SERVICE].link_firebase(user, body.id_token))


@api.route(
    "DELETE",
    f"{P}/link/firebase",
    summary="Unlink the Google account (needs a password set)",
    response=UserOut,
    errors=(409,),
)
async def unlink_firebase(request: web.Request, user: Principal) -> UserOut:
    return UserOut.model_validate(await request.app[AUTH_SERVICE].unlink_firebase(user))


@api.route("GET", f"{P}/me", summary="The signed-in user", response=UserOut)
async def me(request: web.Request, user: Principal) -> UserOut:
    return UserOut.model_validate(user)


@api.route(
    "PATCH",
    f"{P}/me",
    summary="Update display name, time zone or profile picture",
    body=ProfileIn,
    response=UserOut,
    errors=(404,),
)
async def update_me(request: web.Request, user: Principal, body: ProfileIn) -> UserOut:
    avatar = {"avatar_file_id": body.avatar_file_id} if "avatar_file_id" in body.model_fields_set else {}
    updated = await request.app[AUTH_SERVICE].update_profile(
        user, display_name=body.display_name, timezone=body.timezone, **avatar
    )
    return UserOut.model_validate(updated)


@api.route(
    "POST", f"{P}/password", summary="Change (or first set) the password", body=PasswordIn, response=AuthSessionOut
)
async def change_password(request: web.Request, user: Principal, body: PasswordIn) -> dict[str, Any]:
    """Every other session ends; the answer carries fresh tokens for this one."""
    session = await request.app[AUTH_SERVICE].change_password(
        user, current_password=body.current_password, new_password=body.new_password
    )
    return session_body(session)
