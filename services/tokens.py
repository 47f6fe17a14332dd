"""Access tokens (short-lived HS256 JWTs) and opaque refresh tokens (stored only as a hash)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from uuid import UUID

import jwt

from core.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "parlor"
# Domain separation: the successor key is derived from JWT_SECRET but is never the signing key itself.
_SUCCESSOR_LABEL = b"parlor refresh-token successor v1"


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    session_version: int
    role: str
    expires_at: int
    # The refresh-token family the token was issued for; None on tokens issued before sessions existed.
    session_id: UUID | None = None


class TokenSigner:
    def __init__(self, secret: str, *, ttl_seconds: int) -> None:
        if len(secret) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        self._secret = secret
        self._successor_key = hmac.new(secret.encode(), _SUCCESSOR_LABEL, hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        *,
        user_id: UUID,
        session_version: int,
        role: str,
        session_id: UUID | None = None,
        now: float | None = None,
    ) -> str:
        """Deterministic for the same arguments and `now`: a refresh replayed within the grace window
        gets the very token the first call returned."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, object] = {
            "sub": str(user_id),
            "sv": session_version,
            "role": role,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "iss": ISSUER,
            "typ": "access",
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> AccessClaims:
        """Raises Unauthorized with a code the client can act on (`token_expired` means: refresh)."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "sv"]},
            )
        except jwt.ExpiredSignatureError as err:
            raise Unauthorized("access token expired", code="token_expired") from err
        except jwt.PyJWTError as err:
            raise Unauthorized("invalid access token", code="invalid_token") from err
        if claims.get("typ") != "access":
            raise Unauthorized("invalid access token", code="invalid_token")
        try:
            user_id = UUID(str(claims["sub"]))
            session_version = int(claims["sv"])
            session_id = UUID(str(claims["sid"])) if "sid" in claims else None
        except (ValueError, TypeError) as err:
            raise Unauthorized("invalid access token", code="invalid_token") from err
        role = str(claims.get("role", "user"))
        return AccessClaims(user_id, session_version, role, int(claims["exp"]), session_id)

    def successor_refresh_token(self, refresh_token: str) -> str:
        """The token that replaces `refresh_token` at rotation: an HMAC of it under a key derived from
        JWT_SECRET. Deterministic, so a second refresh within the grace window can hand out the same
        successor without the server keeping any refresh token in plaintext; unpredictable to anyone
        who holds the old token but not the secret."""
        digest = hmac.new(self._successor_key, refresh_token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_refresh_token() -> tuple[str, bytes]:
    """A random token for the client and the hash we keep."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    # The token is 256 random (or HMAC-derived) bits, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(token.encode()).digest()
