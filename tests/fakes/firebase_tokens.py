"""Firebase ID tokens as the Auth emulator issues them: unsigned (`alg: none`), with the claims
firebase-admin checks (aud, iss, sub). Used with FIREBASE_AUTH_EMULATOR_HOST set."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

PROJECT_ID = "parlor-test"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def emulator_id_token(
    uid: str,
    *,
    email: str | None = None,
    email_verified: bool = True,
    name: str | None = None,
    project_id: str = PROJECT_ID,
    expires_in: int = 3600,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{project_id}",
        "aud": project_id,
        "auth_time": now - 10,
        "user_id": uid,
        "sub": uid,
        "iat": now - 10,
        "exp": now + expires_in,
        "firebase": {"identities": {"google.com": [uid]}, "sign_in_provider": "google.com"},
    }
    if email is not None:
        claims["email"] = email
        claims["email_verified"] = email_verified
    if name is not None:
        claims["name"] = name
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
