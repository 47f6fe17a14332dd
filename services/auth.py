"""Accounts and sessions: registration, login, refresh-token rotation, Firebase sign-in, profile."""

from __future__ import annotations

import asyncio
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from providers.firebase_auth import FirebaseVerifier
from server.errors import AppError, Conflict, Forbidden, Unauthorized, Unavailable, ValidationFailed
from server.tokens import AccessClaims, TokenSigner, hash_refresh_token, new_refresh_token
from services.events import Events
from services.ratelimit import RateLimiter
from storage.refresh_tokens import RefreshTokenStore
from storage.users import UserRow, UserStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Session:
    user: UserRow
    access_token: str
    refresh_token: str
    expires_in: int


class AuthService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        signer: TokenSigner,
        limiter: RateLimiter,
        events: Events,
        firebase: FirebaseVerifier | None,
        admin_emails: frozenset[str],
        login_rate_per_minute: int,
        refresh_ttl: timedelta,
        argon2_time_cost: int,
        argon2_memory_kib: int,
    ) -> None:
        self._pool = pool
        self._signer = signer
        self._limiter = limiter
        self._events = events
        self._firebase = firebase
        self._admin_emails = admin_emails
        self._login_rate = login_rate_per_minute
        self._refresh_ttl = refresh_ttl
        self._hasher = PasswordHasher(time_cost=argon2_time_cost, memory_cost=argon2_memory_kib)
        self._users = UserStore()
        self._tokens = RefreshTokenStore()
        # Verified against when the account does not exist, so timing does not reveal which emails exist.
        self._dummy_hash = self._hasher.hash("parlor-dummy-password")

    # --- passwords -----------------------------------------------------------------------------

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # --- sessions ------------------------------------------------------------------------------

    async def _open_session(self, conn: asyncpg.Connection, user: UserRow, family_id: UUID | None = None) -> Session:
        token, token_hash = new_refresh_token()
        await self._tokens.insert(
            conn,
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=token_hash,
            expires_at=datetime.now(UTC) + self._refresh_ttl,
        )
        access = self._signer.issue(user_id=user.id, session_version=user.session_version, role=user.role)
        return Session(user, access, token, self._signer.ttl_seconds)

    async def _promote_if_admin(self, conn: asyncpg.Connection, user: UserRow) -> UserRow:
        if user.role != "admin" and user.email.lower() in self._admin_emails:
            promoted = await self._users.set_role(conn, user.id, "admin")
            if promoted is not None:
                log.info("admin role granted from ADMIN_EMAILS", user_id=str(user.id))
                return promoted
        return user

    async def register(self, *, email: str, password: str, display_name: str | None) -> Session:
        password_hash = await self._hash(password)
        role = "admin" if email.lower() in self._admin_emails else "user"
        async with self._pool.acquire() as conn, conn.transaction():
            user = await self._users.insert(
                conn,
                email=email,
                password_hash=password_hash,
                display_name=display_name or email.split("@")[0],
                role=role,
            )
            if user is None:
                raise Conflict("an account with this email already exists", code="email_taken")
            session = await self._open_session(conn, user)
        log.info("user registered", user_id=str(user.id))
        return session

    async def login(self, *, email: str, password: str, ip: str) -> Session:
        await self._limiter.check("login-ip", self._login_rate, ip)
        await self._limiter.check("login-account", self._login_rate, email.lower())
        async with self._pool.acquire() as conn:
            user = await self._users.by_email(conn, email)
        if user is None or user.password_hash is None:
            await self._verify(self._dummy_hash, password)
            raise Unauthorized("wrong email or password", code="invalid_credentials")
        if not await self._verify(user.password_hash, password):
            raise Unauthorized("wrong email or password", code="invalid_credentials")
        if user.is_banned:
            raise Forbidden("this account is banned", code="banned")
        async with self._pool.acquire() as conn, conn.transaction():
            if self._hasher.check_needs_rehash(user.password_hash):
                await self._users.set_password(conn, user.id, await self._hash(password))
                user = await self._users.get(conn, user.id) or user
            user = await self._promote_if_admin(conn, user)
            return await self._open_session(conn, user)

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate: the presented token dies, a new one in the same family is issued. Presenting a token
        that was already rotated means it leaked: the whole family is revoked."""
        token_hash = hash_refresh_token(refresh_token)
        reused = False
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._tokens.by_hash_for_update(conn, token_hash)
            if row is None:
                raise Unauthorized("unknown refresh token", code="invalid_token")
            if row.revoked_at is not None:
                if row.replaced_by is not None:
                    await self._tokens.revoke_family(conn, row.family_id)
                    reused = True
                else:
                    raise Unauthorized("refresh token revoked", code="invalid_token")
            elif row.expires_at <= datetime.now(UTC):
                raise Unauthorized("refresh token expired", code="invalid_token")
            else:
                user = await self._users.get(conn, row.user_id)
                if user is None:
                    raise Unauthorized("unknown refresh token", code="invalid_token")
                if user.is_banned:
                    raise Forbidden("this account is banned", code="banned")
                session = await self._open_session(conn, user, family_id=row.family_id)
                new_row = await self._tokens.by_hash_for_update(conn, hash_refresh_token(session.refresh_token))
                assert new_row is not None
                await self._tokens.mark_rotated(conn, row.id, replaced_by=new_row.id)
                return session
        if reused:
            log.warning("refresh token reuse detected; family revoked", user_id=str(row.user_id))
        raise Unauthorized("refresh token reused; sign in again", code="token_reused")

    async def logout(self, user: UserRow, refresh_token: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._tokens.by_hash_for_update(conn, hash_refresh_token(refresh_token))
            # Another user's token is treated as unknown: nothing changes, nothing leaks.
            if row is not None and row.user_id == user.id:
                await self._tokens.revoke_family(conn, row.family_id)

    async def logout_all(self, user: UserRow) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._tokens.revoke_user(conn, user.id)
            await self._users.bump_session_version(conn, user.id)
        await self._events.disconnect_user(user.id, reason="logged_out")

    async def authenticate(self, access_token: str) -> UserRow:
        """The user behind an access token, refusing banned users and tokens from ended sessions."""
        claims = self.verify_token(access_token)
        return await self.active_user(claims.user_id, claims.session_version)

    def verify_token(self, access_token: str) -> AccessClaims:
        """Signature and expiry only; `active_user` checks the session and the ban."""
        return self._signer.verify(access_token)

    async def active_user(self, user_id: UUID, session_version: int) -> UserRow:
        """The user, if the session that issued `session_version` is still live and not banned."""
        async with self._pool.acquire() as conn:
            user = await self._users.get(conn, user_id)
        if user is None or user.session_version != session_version:
            raise Unauthorized("session ended; sign in again", code="session_ended")
        if user.is_banned:
            raise Forbidden("this account is banned", code="banned")
        return user

    # --- profile -------------------------------------------------------------------------------

    async def update_profile(self, user: UserRow, *, display_name: str | None, timezone: str | None) -> UserRow:
        if timezone is not None:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
                raise ValidationFailed(
                    "timezone: unknown time zone", details=[{"field": "timezone", "message": "unknown time zone"}]
                ) from err
        async with self._pool.acquire() as conn:
            updated = await self._users.update_profile(conn, user.id, display_name=display_name, timezone=timezone)
        if updated is None:
            raise Unauthorized("account no longer exists")
        return updated

    async def change_password(self, user: UserRow, *, current_password: str | None, new_password: str) -> Session:
        """Ends every other session (refresh tokens and access tokens) and returns a fresh one."""
        if user.password_hash is not None:
            if not current_password or not await self._verify(user.password_hash, current_password):
                raise Unauthorized("current password is wrong", code="invalid_credentials")
        new_hash = await self._hash(new_password)
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await self._users.set_password(conn, user.id, new_hash)
            if updated is None:
                raise Unauthorized("account no longer exists")
            await self._tokens.revoke_user(conn, user.id)
            session = await self._open_session(conn, updated)
        await self._events.disconnect_user(user.id, reason="password_changed")
        return session

    # --- Firebase ------------------------------------------------------------------------------

    def _require_firebase(self) -> FirebaseVerifier:
        if self._firebase is None:
            raise Unavailable("firebase sign-in is not configured", code="firebase_disabled")
        return self._firebase

    async def firebase_sign_in(self, id_token: str, *, ip: str) -> tuple[Session, bool]:
        """Exchange a Firebase ID token for Parlor tokens; returns (session, created)."""
        await self._limiter.check("login-ip", self._login_rate, ip)
        identity = await self._require_firebase().verify(id_token)
        async with self._pool.acquire() as conn, conn.transaction():
            user = await self._users.by_firebase_uid(conn, identity.uid)
            created = False
            if user is None and identity.email:
                existing = await self._users.by_email(conn, identity.email)
                if existing is not None:
                    if not identity.email_verified:
                        raise Conflict(
                            "an account with this email exists; sign in and link Google from the profile",
                            code="account_exists",
                        )
                    # A verified Google email proves ownership of the mailbox: link on first use.
                    user = await self._users.set_firebase_uid(conn, existing.id, identity.uid)
            if user is None:
                if not identity.email:
                    raise AppError("the firebase account has no email", code="invalid", status=422)
                user = await self._users.insert(
                    conn,
                    email=identity.email,
                    password_hash=None,
                    display_name=identity.name or identity.email.split("@")[0],
                    role="admin" if identity.email.lower() in self._admin_emails else "user",
                    firebase_uid=identity.uid,
                )
                if user is None:
                    raise Conflict("account already exists", code="account_exists")
                created = True
            if user.is_banned:
                raise Forbidden("this account is banned", code="banned")
            user = await self._promote_if_admin(conn, user)
            return await self._open_session(conn, user), created

    async def link_firebase(self, user: UserRow, id_token: str) -> UserRow:
        identity = await self._require_firebase().verify(id_token)
        async with self._pool.acquire() as conn, conn.transaction():
            owner = await self._users.by_firebase_uid(conn, identity.uid)
            if owner is not None and owner.id != user.id:
                raise Conflict("this Google account is linked to another user", code="firebase_linked_elsewhere")
            try:
                updated = await self._users.set_firebase_uid(conn, user.id, identity.uid)
            except asyncpg.UniqueViolationError as err:
                raise Conflict(
                    "this Google account is linked to another user", code="firebase_linked_elsewhere"
                ) from err
        if updated is None:
            raise Unauthorized("account no longer exists")
        return updated

    async def unlink_firebase(self, user: UserRow) -> UserRow:
        if user.password_hash is None:
            raise Conflict("set a password before unlinking Google, or you could not sign in", code="no_password")
        async with self._pool.acquire() as conn:
            updated = await self._users.set_firebase_uid(conn, user.id, None)
        if updated is None:
            raise Unauthorized("account no longer exists")
        return updated
