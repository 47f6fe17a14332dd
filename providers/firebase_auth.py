"""Firebase ID-token verification through firebase-admin. A token that does not prove a Firebase user
raises FirebaseTokenInvalid; what the client is told (status, code) is the caller's choice."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import firebase_admin
import google.auth.credentials
import structlog
from firebase_admin import auth, credentials

log = structlog.get_logger(__name__)
_app_names = itertools.count()


class FirebaseTokenInvalid(Exception):
    """The ID token is malformed, badly signed, for another project, expired or revoked."""


@dataclass(frozen=True)
class FirebaseIdentity:
    uid: str
    email: str | None
    email_verified: bool
    name: str | None


class FirebaseVerifier(Protocol):
    async def verify(self, id_token: str) -> FirebaseIdentity: ...


class _AnonymousCredential(credentials.Base):
    """For the Auth emulator: no key, no network."""

    def get_credential(self) -> google.auth.credentials.Credentials:
        return google.auth.credentials.AnonymousCredentials()


class FirebaseAdminVerifier:
    def __init__(self, app: firebase_admin.App, *, emulated: bool) -> None:
        self._app = app
        self._emulated = emulated

    @classmethod
    def from_settings(cls, credentials_path: Path | None, project_id: str | None) -> FirebaseAdminVerifier | None:
        emulated = bool(os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"))
        options: dict[str, Any] = {"projectId": project_id} if project_id else {}
        cred: credentials.Base
        if credentials_path:
            cred = credentials.Certificate(str(credentials_path))
        elif emulated and project_id:
            cred = _AnonymousCredential()
        else:
            return None
        app = firebase_admin.initialize_app(cred, options, name=f"parlor-{next(_app_names)}")
        if emulated:
            log.warning("firebase auth emulator in use: ID tokens are not signature-checked")
        return cls(app, emulated=emulated)

    async def verify(self, id_token: str) -> FirebaseIdentity:
        try:
            # Synchronous and may fetch Google's certificates: keep it off the event loop.
            claims = await asyncio.to_thread(auth.verify_id_token, id_token, app=self._app)
        except (auth.ExpiredIdTokenError, auth.RevokedIdTokenError) as err:
            raise FirebaseTokenInvalid("firebase token expired or revoked") from err
        except (auth.InvalidIdTokenError, ValueError) as err:
            raise FirebaseTokenInvalid("invalid firebase token") from err
        # The emulator path skips the expiry check, so do it ourselves in every mode.
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < time.time():
            raise FirebaseTokenInvalid("firebase token expired")
        uid = claims.get("uid") or claims.get("sub")
        if not uid:
            raise FirebaseTokenInvalid("invalid firebase token")
        return FirebaseIdentity(
            uid=str(uid),
            email=claims.get("email"),
            email_verified=bool(claims.get("email_verified")),
            name=claims.get("name"),
        )

    def close(self) -> None:
        firebase_admin.delete_app(self._app)
