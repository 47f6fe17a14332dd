"""One error hierarchy. REST turns these into `{"error": {...}}`, sockets into a failed ack."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Every error code a client can receive (REST `error.code`, socket ack `error.code`, `ai:error`
    `code`): stable strings clients are written against. tests/core/test_codes.py fails when the code
    uses one that is not listed here."""

    ACCOUNT_EXISTS = "account_exists"
    BAD_REQUEST = "bad_request"
    BANNED = "banned"
    BILLING_DISABLED = "billing_disabled"
    BILLING_PROVIDER_ERROR = "billing_provider_error"
    BILLING_UNAVAILABLE = "billing_unavailable"
    BUSY = "busy"
    CANCEL_IN_STORE = "cancel_in_store"
    CONFLICT = "conflict"
    CUSTOMER_CONFLICT = "customer_conflict"
    EMAIL_TAKEN = "email_taken"
    EMPTY_REPLY = "empty_reply"
    FIREBASE_DISABLED = "firebase_disabled"
    FIREBASE_LINKED_ELSEWHERE = "firebase_linked_elsewhere"
    FORBIDDEN = "forbidden"
    HTTP_ERROR = "http_error"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    INTERNAL = "internal"
    INVALID = "invalid"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_EVENT = "invalid_event"
    INVALID_FILE = "invalid_file"
    INVALID_JSON = "invalid_json"
    INVALID_MULTIPART = "invalid_multipart"
    INVALID_PURCHASE_TOKEN = "invalid_purchase_token"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_TOKEN = "invalid_token"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NO_PASSWORD = "no_password"
    NO_PERSONA = "no_persona"
    NO_SUBSCRIPTION = "no_subscription"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PLAN_LIMIT = "plan_limit"
    PRODUCT_MISMATCH = "product_mismatch"
    PROVIDER_AUTH = "provider_auth"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PURCHASE_TOKEN_IN_USE = "purchase_token_in_use"
    QUOTA_EXCEEDED = "quota_exceeded"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    RATE_LIMITED = "rate_limited"
    REPLY_LOST = "reply_lost"
    SESSION_ENDED = "session_ended"
    STORAGE_LIMIT = "storage_limit"
    STREAM_GONE = "stream_gone"
    TOO_MANY_JOBS = "too_many_jobs"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REUSED = "token_reused"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    UNKNOWN_EVENT = "unknown_event"
    UNKNOWN_PRODUCT = "unknown_product"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_TYPE = "unsupported_type"


class AppError(Exception):
    status = 400
    code: str = Code.INVALID

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(AppError):
    status = 400
    code = Code.BAD_REQUEST


class ValidationFailed(AppError):
    status = 422
    code = Code.INVALID


class Unauthorized(AppError):
    status = 401
    code = Code.UNAUTHORIZED


class Forbidden(AppError):
    status = 403
    code = Code.FORBIDDEN


class NotFound(AppError):
    status = 404
    code = Code.NOT_FOUND


class Conflict(AppError):
    status = 409
    code = Code.CONFLICT


class Busy(Conflict):
    """The message is streaming (a reply being written): it cannot be changed until the reply ends."""

    code = Code.BUSY


class PayloadTooLarge(AppError):
    status = 413
    code = Code.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(AppError):
    status = 415
    code = Code.UNSUPPORTED_MEDIA_TYPE


class RateLimited(AppError):
    status = 429
    code = Code.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: int) -> None:
        retry_after = max(1, retry_after)
        super().__init__(message, details={"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class TooManyJobs(RateLimited):
    """The user has as many jobs queued or running as they may; a new one waits for one to end."""

    code = Code.TOO_MANY_JOBS


class Unavailable(AppError):
    status = 503
    code = Code.UNAVAILABLE


class StreamGone(Exception):
    """A reply stream the stream buffer does not hold: never existed, or ended long enough ago to be
    dropped. Raised by the buffer (storage) and caught by whoever reads a stream, each answering it in
    its own shape (an `ai:error` event, an SSE `error`); not an AppError, so never a response by itself."""
