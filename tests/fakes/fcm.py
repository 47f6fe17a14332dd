"""A local fake of FCM's HTTP v1 send endpoint and Google's OAuth token endpoint, speaking their wire
formats so the real firebase-admin SDK can be pointed at it (providers/push.py, FCM_BASE_URL).

- `POST /v1/projects/{project}/messages:send` with `{"message": {...}, "validate_only"?}` →
  `{"name": "projects/{project}/messages/<id>"}`, or an error in the google.rpc status shape
  `{"error": {"code", "message", "status", "details": [{"@type": ".../google.firebase.fcm.v1.FcmError",
  "errorCode"}]}}`. What a token gets is scripted with `fake.answer(token, kind)`; every request is
  recorded (parsed JSON, with the Authorization header) in `fake.received`.
- `POST /token`: the OAuth 2.0 JWT-bearer grant a service-account credential uses (its `token_uri`);
  answers `{"access_token", "expires_in", "token_type"}` and counts the grants.

firebase-admin fetches that token with blocking `requests` in the sender's thread, so the fake runs
on its own loop in a thread (`FakeFcm.start()`), reachable whatever the caller's loop is doing."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import serve

ACCESS_TOKEN = "ya29.fake-fcm-access-token"
# The Firebase project the tests' senders send as.
FCM_PROJECT = "parlor-push-test"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

Answer = Literal["ok", "unregistered", "invalid_argument", "quota_exceeded", "unavailable", "internal"]

# status, google.rpc status, FCM errorCode, message: as FCM answers them.
_ERRORS: dict[str, tuple[int, str, str, str]] = {
    "unregistered": (404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    "invalid_argument": (
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "quota_exceeded": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for the device."),
    "unavailable": (503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    "internal": (500, "INTERNAL", "INTERNAL", "Internal error encountered."),
}


@dataclass(frozen=True)
class Received:
    project: str
    body: dict[str, Any]
    authorization: str | None

    @property
    def message(self) -> dict[str, Any]:
        message = self.body["message"]
        assert isinstance(message, dict)
        return message

    @property
    def token(self) -> str | None:
        return self.message.get("token")


class FakeFcm:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.token_grants = 0
        # Seconds the token endpoint takes to answer: makes a token fetch on the caller's loop visible.
        self.token_delay = 0.0
        self._answers: dict[str, tuple[Answer, float | None, str | None]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- scripting and assertions (any thread) ---

    def answer(self, token: str, kind: Answer, *, retry_after: float | None = None, field: str | None = None) -> None:
        """What every send to `token` gets from now on; `retry_after` adds a Retry-After header, `field`
        a google.rpc.BadRequest violation naming the faulty field (as FCM does for a bad payload)."""
        with self._lock:
            self._answers[token] = (kind, retry_after, field)

    def messages_for(self, token: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r.message for r in self.received if r.token == token]

    def token_uri(self) -> str:
        return f"{self.url}/token"

    # --- the server, on its own loop in a thread ---

    def start(self) -> FakeFcm:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._runner, self.url = loop.run_until_complete(serve(self._app()))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-fcm", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake FCM did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(r"/v1/projects/{project}/messages:send", self._send)
        app.router.add_post("/token", self._token)
        return app

    async def _send(self, request: web.Request) -> web.Response:
        project = request.match_info["project"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", None)
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name.", None)
        with self._lock:
            self.received.append(Received(project, body, request.headers.get("Authorization")))
            token = body["message"].get("token")
            kind, retry_after, field = self._answers.get(token, ("ok", None, None)) if token else ("ok", None, None)
            message_id = next(self._ids)
        if kind == "ok":
            return web.json_response({"name": f"projects/{project}/messages/0:{message_id}%fake"})
        status, rpc_status, fcm_code, text = _ERRORS[kind]
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        if field is not None:
            text = f"Invalid value at '{field}'"
        return _error(status, rpc_status, text, fcm_code, headers=headers, field=field)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            return web.json_response({"error": "invalid_grant", "error_description": "bad grant"}, status=400)
        await asyncio.sleep(self.token_delay)
        with self._lock:
            self.token_grants += 1
        return web.json_response({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})


def _error(
    status: int,
    rpc_status: str,
    message: str,
    fcm_code: str | None,
    *,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_code})
    if field:
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field, "description": message}]})
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def write_service_account(path: Path, token_uri: str, project: str) -> Path:
    """A service-account file (a fresh RSA key) whose token grants go to `token_uri`: FIREBASE_CREDENTIALS
    for a server whose pushes go to the fake."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "fake-key-1",
        "private_key": pem,
        "client_email": f"firebase-adminsdk@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path
