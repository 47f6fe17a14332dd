"""A real S3-compatible server on 127.0.0.1 for the tests: moto's S3 in server mode (its own WSGI
app, in a thread, on a free port), answering aiobotocore, boto3 and plain HTTP like S3 does.

moto does not check presigned URLs at all, so a thin WSGI layer in front of it does what S3 does
with one before handing it on: a URL past its X-Amz-Date + X-Amz-Expires gets 403 AccessDenied
"Request has expired", and one whose signature does not match (a changed parameter, another
secret) gets 403 SignatureDoesNotMatch."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from providers.blobs.s3 import S3Settings
from tests.helpers import free_port

ACCESS_KEY_ID = "parlor-test-key"
SECRET_ACCESS_KEY = "parlor-test-secret"
REGION = "us-east-1"
_SIGNED_AT = "%Y%m%dT%H%M%SZ"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _s3_error(start_response: StartResponse, code: str, message: str) -> list[bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body.encode()]


class PresignedCheck:
    """WSGI middleware: refuse presigned requests that S3 would refuse (expired, badly signed)."""

    def __init__(self, app: WsgiApp, secret_access_key: str) -> None:
        self.app = app
        self.secret_access_key = secret_access_key

    def _refusal(self, environ: dict[str, Any], query: str) -> tuple[str, str] | None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            signed_at = datetime.strptime(params["X-Amz-Date"], _SIGNED_AT).replace(tzinfo=UTC)
            expires = int(params["X-Amz-Expires"])
            access_key, _date, region, *_ = params["X-Amz-Credential"].split("/")
        except (KeyError, ValueError):
            return "AuthorizationQueryParametersError", "Query-string authentication requires X-Amz-* parameters"
        if datetime.now(UTC) > signed_at + timedelta(seconds=expires):
            return "AccessDenied", "Request has expired"
        # Sign the same request again and compare, as S3 does: on the decoded parameters (a client
        # may re-encode a URL, "image%2Fpng" as "image/png"), with the one secret this server knows.
        raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]
        unsigned = {name: value for name, value in params.items() if name != "X-Amz-Signature"}
        request = AWSRequest(
            method=environ["REQUEST_METHOD"],
            url=f"http://{environ['HTTP_HOST']}{raw_path.partition('?')[0]}",
            params=unsigned,
        )
        request.context["timestamp"] = params["X-Amz-Date"]
        auth = S3SigV4QueryAuth(Credentials(access_key, self.secret_access_key), "s3", region, expires=expires)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if expected != params.get("X-Amz-Signature"):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        return None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").partition("?")[2]
        if "X-Amz-Signature=" in query:
            refusal = self._refusal(environ, query)
            if refusal is not None:
                return _s3_error(start_response, *refusal)
        return self.app(environ, start_response)


class FakeS3:
    """moto's S3 server on 127.0.0.1:<free port>. Use as a context manager (or start()/stop()); every
    test takes its own bucket (`new_bucket()`) so tests never see each other's objects."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def start(self) -> FakeS3:
        app = PresignedCheck(DomainDispatcherApplication(create_backend_app), SECRET_ACCESS_KEY)
        # The same server ThreadedMotoServer builds, with the presigned check in front of moto's app.
        self._server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        """A plain (blocking) boto3 client, for a test to look behind a store's back."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def new_bucket(self) -> str:
        name = f"parlor-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str | None = None, **overrides: Any) -> S3Settings:
        """S3Settings for a store on this server (a new bucket unless one is named)."""
        values: dict[str, Any] = {
            "bucket": bucket or self.new_bucket(),
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        }
        values.update(overrides)
        return S3Settings(**values)


def running_s3() -> Iterator[FakeS3]:
    """Generator form for a pytest fixture: `yield from running_s3()`."""
    with FakeS3() as server:
        yield server
