"""Access tokens (short-lived HS256 JWTs) and opaque refresh tokens (stored only as a hash)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from uuid import UUID

import jwt

from server.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "parlor"


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    session_version: int
    role: str
    expires_at: int


class TokenSigner:
    def __init__(self, secret: str, *, ttl_seconds: int) -> None:
        if len(secret) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, *, user_id: UUID, session_version: int, role: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": str(user_id),
            "sv": session_version,
            "role": role,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "iss": ISSUER,
            "typ": "access",
        }
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
        except (ValueError, TypeError) as err:
            raise Unauthorized("invalid access token", code="invalid_token") from err
        return AccessClaims(user_id, session_version, str(claims.get("role", "user")), int(claims["exp"]))


def new_refresh_token() -> tuple[str, bytes]:
    """A random token for the client and the hash we keep."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    # The token is 256 random bits, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(token.encode()).digest()
