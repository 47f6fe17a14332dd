"""Accounts and sessions: registration, login, refresh-token rotation, Firebase sign-in, profile."""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.entities import Principal
from core.errors import AppError, Conflict, Forbidden, Unauthorized, Unavailable, ValidationFailed
from core.events import Events
from providers.firebase_auth import FirebaseIdentity, FirebaseTokenInvalid, FirebaseVerifier
from services import avatars, roles
from services.avatars import KEEP, AvatarChange
from services.files.service import FilesService
from services.revoked_sessions import RevokedSessions
from services.tokens import AccessClaims, TokenSigner, hash_refresh_token, new_refresh_token
from storage.ratelimit import RateLimiter, per_hour, per_minute
from storage.refresh_tokens import RefreshTokenRow, RefreshTokenStore
from storage.users import UserRow, UserStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Session:
    user: Principal
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
        revoked: RevokedSessions,
        events: Events,
        firebase: FirebaseVerifier | None,
        admin_emails: frozenset[str],
        login_rate_per_minute: int,
        login_account_rate_per_hour: int,
        register_rate_per_hour: int,
        refresh_ttl: timedelta,
        refresh_reuse_grace: timedelta,
        argon2_time_cost: int,
        argon2_memory_kib: int,
        files: FilesService,
    ) -> None:
        self._pool = pool
        self._files = files
        self._signer = signer
        self._limiter = limiter
        self._revoked = revoked
        self._events = events
        self._firebase = firebase
        self._admin_emails = admin_emails
        # Every attempt per IP; failures per (account, IP) at the same rate, so a stranger's wrong
        # passwords never lock the owner out from another address; failures per account from every
        # address together, slower, against guessing spread over many addresses.
        self._login_ip_rate = per_minute(login_rate_per_minute)
        self._login_failure_rate = per_minute(login_rate_per_minute)
        self._login_account_rate = per_hour(login_account_rate_per_hour)
        self._register_rate = per_hour(register_rate_per_hour)
        self._refresh_ttl = refresh_ttl
        self._grace = refresh_reuse_grace
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

    async def _open_session(
        self,
        conn: asyncpg.Connection,
        user: UserRow,
        *,
        family_id: UUID | None = None,
        refresh_token: str | None = None,
    ) -> tuple[Session, RefreshTokenRow]:
        """A new refresh token (random, or the given successor) in the family (a new one by default)."""
        token, token_hash = (
            new_refresh_token() if refresh_token is None else (refresh_token, hash_refresh_token(refresh_token))
        )
        now = datetime.now(UTC)
        row = await self._tokens.insert(
            conn,
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=token_hash,
            created_at=now,
            expires_at=now + self._refresh_ttl,
        )
        return self._session(user, row, token), row

    def _session(self, user: UserRow, row: RefreshTokenRow, refresh_token: str) -> Session:
        """The pair for a stored refresh token. The access token is signed as of the row's creation, so
        the same row and user always give the same access token (the grace window relies on it)."""
        issued = row.created_at.timestamp()
        access = self._signer.issue(
            user_id=user.id,
            session_version=user.session_version,
            role=user.role,
            session_id=row.family_id,
            now=issued,
        )
        remaining = self._signer.ttl_seconds - max(0, int(time.time() - issued))
        return Session(user.principal(), access, refresh_token, max(remaining, 0))

    async def _admin_if_proven(self, conn: asyncpg.Connection, user: UserRow, identity: FirebaseIdentity) -> UserRow:
        """ADMIN_EMAILS grants the role only to a verified identity that proves the address: nobody
        becomes an admin by registering a listed email first (there is no email verification)."""
        email = (identity.email or "").lower()
        if not identity.email_verified or email not in self._admin_emails or user.role == "admin":
            return user
        if user.password_hash is not None:
            # The password was set before anyone proved the address: possibly by a squatter who
            # registered it first. The proof is Google's, not the password holder's.
            log.warning(
                "ADMIN_EMAILS: not granted to an account with a password; use `python -m server users promote`",
                user_id=str(user.id),
            )
            return user
        return (await roles.set_role(conn, user, "admin", via="ADMIN_EMAILS (verified Firebase email)")).user

    async def register(self, *, email: str, password: str, display_name: str | None, ip: str) -> Session:
        await self._limiter.hit(self._register_rate, "register-ip", ip)
        password_hash = await self._hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            user = await self._users.insert(
                conn,
                email=email,
                password_hash=password_hash,
                display_name=display_name or email.split("@")[0],
                role="user",
            )
            if user is None:
                raise Conflict("an account with this email already exists", code="email_taken")
            session, _ = await self._open_session(conn, user)
        log.info("user registered", user_id=str(user.id))
        return session

    async def login(self, *, email: str, password: str, ip: str) -> Session:
        account = email.lower()
        await self._limiter.hit(self._login_ip_rate, "login-ip", ip)
        # Only failures fill these two: the owner's correct password is refused only when this
        # address, or every address together, has already failed too often for the account.
        await self._limiter.require_room(self._login_failure_rate, "login-failed", account, ip)
        await self._limiter.require_room(self._login_account_rate, "login-failed-account", account)
        async with self._pool.acquire() as conn:
            user = await self._users.by_email(conn, email)
        password_hash = user.password_hash if user is not None else None
        valid = await self._verify(password_hash or self._dummy_hash, password)
        if user is None or password_hash is None or not valid:
            await self._limiter.count(self._login_failure_rate, "login-failed", account, ip)
            await self._limiter.count(self._login_account_rate, "login-failed-account", account)
            raise Unauthorized("wrong email or password", code="invalid_credentials")
        if user.is_banned:
            raise Forbidden("this account is banned", code="banned")
        async with self._pool.acquire() as conn, conn.transaction():
            if self._hasher.check_needs_rehash(password_hash):
                await self._users.set_password(conn, user.id, await self._hash(password))
                user = await self._users.get(conn, user.id) or user
            session, _ = await self._open_session(conn, user)
            return session

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate: the presented token dies, its successor in the same family is issued. The same token
        presented again within the grace window gets the same successor (two tabs, a retried request);
        later, it means the token leaked: the whole family is revoked, its access tokens included."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._tokens.by_hash_for_update(conn, hash_refresh_token(refresh_token))
            if row is None:
                raise Unauthorized("unknown refresh token", code="invalid_token")
            now = datetime.now(UTC)
            if row.revoked_at is None:
                if row.expires_at <= now:
                    raise Unauthorized("refresh token expired", code="invalid_token")
                user = await self._live_user(conn, row.user_id)
                successor = self._signer.successor_refresh_token(refresh_token)
                session, new_row = await self._open_session(
                    conn, user, family_id=row.family_id, refresh_token=successor
                )
                await self._tokens.mark_rotated(conn, row.id, replaced_by=new_row.id)
                return session
            if row.replaced_by is None:
                raise Unauthorized("refresh token revoked", code="invalid_token")
            replay = await self._replay_within_grace(conn, row, refresh_token, now)
            if replay is not None:
                return replay
            await self._tokens.revoke_family(conn, row.family_id)
        await self._revoked.add([row.family_id])
        log.warning("refresh token reuse detected; session revoked", user_id=str(row.user_id))
        raise Unauthorized("refresh token reused; sign in again", code="token_reused")

    async def _replay_within_grace(
        self, conn: asyncpg.Connection, row: RefreshTokenRow, refresh_token: str, now: datetime
    ) -> Session | None:
        """The pair the rotation of `row` issued, if that was within the grace window and its refresh
        token is still the family's live one; None means: treat the presentation as reuse."""
        if self._grace <= timedelta(0) or row.replaced_by is None:
            return None
        successor = await self._tokens.by_id_for_update(conn, row.replaced_by)
        if successor is None or successor.revoked_at is not None or successor.expires_at <= now:
            return None
        if now - successor.created_at > self._grace:
            return None
        token = self._signer.successor_refresh_token(refresh_token)
        # Differs only if JWT_SECRET changed since the rotation: then we cannot give the same pair.
        if not hmac.compare_digest(hash_refresh_token(token), successor.token_hash):
            return None
        return self._session(await self._live_user(conn, row.user_id), successor, token)

    async def _live_user(self, conn: asyncpg.Connection, user_id: UUID) -> UserRow:
        user = await self._users.get(conn, user_id)
        if user is None:
            raise Unauthorized("unknown refresh token", code="invalid_token")
        if user.is_banned:
            raise Forbidden("this account is banned", code="banned")
        return user

    async def logout(self, user: Principal, refresh_token: str) -> None:
        """Ends the session the refresh token belongs to: its access tokens stop working too."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._tokens.by_hash_for_update(conn, hash_refresh_token(refresh_token))
            # Another user's token is treated as unknown: nothing changes, nothing leaks.
            if row is None or row.user_id != user.id:
                return
            await self._tokens.revoke_family(conn, row.family_id)
        await self._revoked.add([row.family_id])

    async def logout_all(self, user: Principal) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._tokens.revoke_user(conn, user.id)
            await self._users.bump_session_version(conn, user.id)
        await self._events.disconnect_user(user.id, reason="logged_out")

    async def authenticate(self, access_token: str) -> Principal:
        """The user behind an access token, refusing banned users and tokens from ended sessions."""
        return (await self.authenticate_claims(access_token))[0]

    async def authenticate_claims(self, access_token: str) -> tuple[Principal, AccessClaims]:
        """`authenticate`, with the token's claims (a socket keeps its session id for later checks)."""
        claims = self.verify_token(access_token)
        user = await self.active_user(claims.user_id, claims.session_version, claims.session_id)
        return user, claims

    def verify_token(self, access_token: str) -> AccessClaims:
        """Signature and expiry only; `active_user` checks the session and the ban."""
        return self._signer.verify(access_token)

    async def active_user(self, user_id: UUID, session_version: int, session_id: UUID | None = None) -> Principal:
        """The user, if the session that issued `session_version` is still live and not banned, and the
        session `session_id` (the token's refresh-token family) was not revoked."""
        if session_id is not None and await self._revoked.contains(session_id):
            raise Unauthorized("session ended; sign in again", code="session_ended")
        async with self._pool.acquire() as conn:
            user = await self._users.get(conn, user_id)
        if user is None or user.session_version != session_version:
            raise Unauthorized("session ended; sign in again", code="session_ended")
        if user.is_banned:
            raise Forbidden("this account is banned", code="banned")
        return user.principal()

    # --- profile -------------------------------------------------------------------------------

    async def update_profile(
        self,
        user: Principal,
        *,
        display_name: str | None,
        timezone: str | None,
        avatar_file_id: AvatarChange = KEEP,
    ) -> Principal:
        """None leaves display_name and timezone as they are. The avatar: a file (the user's own image:
        404 naming the field otherwise, 422 if not an image), None to remove it, KEEP to leave it."""
        if timezone is not None:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
                raise ValidationFailed(
                    "timezone: unknown time zone", details=[{"field": "timezone", "message": "unknown time zone"}]
                ) from err
        if avatar_file_id is not KEEP and avatar_file_id is not None:
            await avatars.own_image(self._files, user, avatar_file_id)
        with avatars.file_gone_is_not_found():
            async with self._pool.acquire() as conn:
                updated = await self._users.update_profile(
                    conn,
                    user.id,
                    display_name=display_name,
                    timezone=timezone,
                    **avatars.columns(avatar_file_id),
                )
        if updated is None:
            raise Unauthorized("account no longer exists")
        return updated.principal()

    async def change_password(self, user: Principal, *, current_password: str | None, new_password: str) -> Session:
        """Ends every other session (refresh tokens and access tokens) and returns a fresh one."""
        async with self._pool.acquire() as conn:
            stored = await self._users.get(conn, user.id)
        if stored is None:
            raise Unauthorized("account no longer exists")
        if stored.password_hash is not None:
            if not current_password or not await self._verify(stored.password_hash, current_password):
                raise Unauthorized("current password is wrong", code="invalid_credentials")
        new_hash = await self._hash(new_password)
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await self._users.set_password(conn, user.id, new_hash)
            if updated is None:
                raise Unauthorized("account no longer exists")
            await self._tokens.revoke_user(conn, user.id)
            session, _ = await self._open_session(conn, updated)
        await self._events.disconnect_user(user.id, reason="password_changed")
        return session

    # --- Firebase ------------------------------------------------------------------------------

    async def _firebase_identity(self, id_token: str) -> FirebaseIdentity:
        if self._firebase is None:
            raise Unavailable("firebase sign-in is not configured", code="firebase_disabled")
        try:
            return await self._firebase.verify(id_token)
        except FirebaseTokenInvalid as err:
            raise Unauthorized(str(err), code="invalid_token") from err

    async def firebase_sign_in(self, id_token: str, *, ip: str) -> tuple[Session, bool]:
        """Exchange a Firebase ID token for Parlor tokens; returns (session, created)."""
        await self._limiter.hit(self._login_ip_rate, "login-ip", ip)
        identity = await self._firebase_identity(id_token)
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
                    role="user",
                    firebase_uid=identity.uid,
                )
                if user is None:
                    raise Conflict("account already exists", code="account_exists")
                created = True
            if user.is_banned:
                raise Forbidden("this account is banned", code="banned")
            user = await self._admin_if_proven(conn, user, identity)
            session, _ = await self._open_session(conn, user)
            return session, created

    async def link_firebase(self, user: Principal, id_token: str) -> Principal:
        identity = await self._firebase_identity(id_token)
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
        return updated.principal()

    async def unlink_firebase(self, user: Principal) -> Principal:
        if not user.has_password:
            raise Conflict("set a password before unlinking Google, or you could not sign in", code="no_password")
        async with self._pool.acquire() as conn:
            updated = await self._users.set_firebase_uid(conn, user.id, None)
        if updated is None:
            raise Unauthorized("account no longer exists")
        return updated.principal()
