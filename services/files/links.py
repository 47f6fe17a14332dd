"""Signed links to a file's content: a URL that works without a token until it expires (POST
/files/{id}/link). The signature is an HMAC over the file id, the variant and the expiry, with a key
derived from the server's secret, so links survive restarts and work on every node; nothing is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
from uuid import UUID

_LABEL = b"parlor file link v1"


class LinkSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()

    def sign(self, file_id: UUID, variant: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{file_id}:{variant}:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def valid(self, file_id: UUID, variant: str, expires: int, signature: str, *, now: float) -> bool:
        if expires < now or not signature.isascii():  # compare_digest takes ASCII strings only
            return False
        return hmac.compare_digest(self.sign(file_id, variant, expires), signature)
