"""Bad input never reaches the database or the stack (SPEC §12, issue 11 defects 7-10): integers out
of PostgreSQL's bigint range and non-ASCII digits in query strings, cursors and headers are 422 naming
the field; JSON nested too deep is 400 `invalid_json`; a stale or garbage Authorization header is
ignored by public endpoints; an SSE client that hangs up is counted as a client disconnect (499)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
import structlog
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient

from handlers.keys import SIGNER
from server.app import create_app
from server.config import Settings
from tests.helpers import bearer, free_port, make_admin, make_chat, register, unique_email

BIG = str(2**63)  # one past PostgreSQL's bigint
HUGE = "99999999999999999999"
UNICODE_DIGITS = ("\u00b2", "\u0663", "\uff11\uff12")  # superscript two, Arabic-Indic three, fullwidth twelve


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def fields_of(resp: Any) -> list[str]:
    body = await resp.json()
    assert "error" in body, body
    return [d.get("field") for d in body["error"].get("details") or []]


async def assert_422(resp: Any, field: str) -> None:
    text = await resp.text()
    assert resp.status == 422, (resp.url, text)
    assert field in await fields_of(resp), text


# --- defect 7: integers --------------------------------------------------------------------------


def forged_cursor(position: dict[str, Any]) -> str:
    """A cursor made the way core.pages makes them, around a position of our choosing."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


# Ledger and audit-log cursors are opaque (core.pages): a bare number is not one, and a forged one holding an
# id beyond PostgreSQL's bigint (or below 0) is refused before it reaches the database.
BAD_ID_CURSORS = [
    HUGE,
    BIG,
    *UNICODE_DIGITS,
    "-1",
    "1.0",
    " 7",
    "7",
    forged_cursor({"id": 2**63}),
    forged_cursor({"id": -1}),
    forged_cursor({"id": "7"}),
    forged_cursor({"id": 7, "more": 1}),
]


@pytest.mark.parametrize("cursor", BAD_ID_CURSORS)
async def test_ledger_cursor_must_be_one_of_ours(client: TestClient, cursor: str) -> None:
    user = await register(client)
    resp = await client.get("/api/v1/credits/ledger", params={"cursor": cursor}, headers=bearer(user))
    await assert_422(resp, "cursor")


async def test_ledger_cursor_at_the_bigint_limit_works(client: TestClient) -> None:
    user = await register(client)
    cursor = forged_cursor({"id": 2**63 - 1})
    resp = await client.get("/api/v1/credits/ledger", params={"cursor": cursor}, headers=bearer(user))
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("cursor", BAD_ID_CURSORS)
async def test_audit_log_cursor_must_be_one_of_ours(client: TestClient, settings: Settings, cursor: str) -> None:
    admin = await make_admin(client, settings.database_url)
    resp = await client.get("/api/v1/admin/audit-log", params={"cursor": cursor}, headers=bearer(admin))
    await assert_422(resp, "cursor")


@pytest.mark.parametrize("name", ["after_seq", "before_seq"])
@pytest.mark.parametrize("value", [BIG, HUGE, *UNICODE_DIGITS])
async def test_history_seq_bounds(client: TestClient, name: str, value: str) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    resp = await client.get(f"/api/v1/chat/sessions/{chat['id']}/messages", params={name: value}, headers=bearer(user))
    await assert_422(resp, name)


async def test_history_seq_at_the_bigint_limit_works(client: TestClient) -> None:
    user = await register(client)
    chat = await make_chat(client, user)
    url = f"/api/v1/chat/sessions/{chat['id']}/messages"
    resp = await client.get(url, params={"after_seq": str(2**63 - 1)}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["items"] == []


async def _finished_reply(client: TestClient, user: dict[str, Any]) -> str:
    chat = await make_chat(client, user)
    body = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "hello"}
    resp = await client.post("/api/v1/ai/generate", json=body, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["id"])


@pytest.mark.parametrize("header", [*UNICODE_DIGITS, BIG, HUGE, "-1"])
async def test_last_event_id_must_be_a_chunk_index(client: TestClient, header: str) -> None:
    user = await register(client)
    stream_id = await _finished_reply(client, user)
    resp = await client.get(f"/api/v1/ai/stream/{stream_id}", headers={**bearer(user), "Last-Event-ID": header})
    await assert_422(resp, "Last-Event-ID")


@pytest.mark.parametrize("value", [BIG, *UNICODE_DIGITS])
async def test_from_index_must_be_a_bigint(client: TestClient, value: str) -> None:
    user = await register(client)
    stream_id = await _finished_reply(client, user)
    resp = await client.get(f"/api/v1/ai/stream/{stream_id}", params={"from_index": value}, headers=bearer(user))
    await assert_422(resp, "from_index")


@pytest.mark.parametrize("path", ["/api/v1/personas/search?q=x&cursor={c}", "/api/v1/personas/trending?cursor={c}"])
async def test_offset_cursor_beyond_bigint_is_refused(client: TestClient, path: str) -> None:
    user = await register(client)
    resp = await client.get(path.format(c=b64({"offset": 2**63})), headers=bearer(user))
    await assert_422(resp, "cursor")


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_keyset_cursor_with_a_time_outside_the_calendar_is_refused(client: TestClient, stamp: str) -> None:
    """Valid ISO 8601 whose UTC form falls outside years 1..9999: refused, not a 500 in the driver."""
    user = await register(client)
    cursor = b64({"created_at": stamp, "id": str(uuid.uuid4())})
    resp = await client.get("/api/v1/personas", params={"cursor": cursor}, headers=bearer(user))
    await assert_422(resp, "cursor")


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "2024-01-01T00:00:00 junk"])
async def test_admin_user_cursor_and_plan_until_times(client: TestClient, settings: Settings, stamp: str) -> None:
    admin = await make_admin(client, settings.database_url)
    resp = await client.get("/api/v1/admin/users", params={"cursor": stamp}, headers=bearer(admin))
    await assert_422(resp, "cursor")
    target = await register(client)
    resp = await client.post(
        f"/api/v1/admin/users/{target['user']['id']}/plan",
        json={"plan": "premium", "until": stamp},
        headers=bearer(admin),
    )
    await assert_422(resp, "until")


# --- defect 8: deep JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 1000, 5000, 40_000])
async def test_deeply_nested_json_is_invalid_json_not_500(client: TestClient, depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        resp = await client.post(
            "/api/v1/auth/register", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        text = await resp.text()
        assert resp.status == 400, text
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_json" and "nested" in error["message"], error


async def test_nesting_within_the_limit_is_validated_as_usual(client: TestClient) -> None:
    body = '{"email": "a@example.com", "password": "long enough", "display_name": ' + "[" * 60 + "]" * 60 + "}"
    resp = await client.post("/api/v1/auth/register", data=body, headers={"Content-Type": "application/json"})
    await assert_422(resp, "display_name")


@pytest.mark.parametrize(
    "tail", [b'"display_name": "\\ud800"}', b'"display_name": NaN}', b'"display_name": 1e400}', b'"a": "\xff"}']
)
async def test_json_the_database_could_not_store_is_invalid_json(client: TestClient, tail: bytes) -> None:
    """Lone surrogates (PostgreSQL cannot store them), NaN, infinities and bytes that are not UTF-8 are not
    JSON (RFC 8259): 400 `invalid_json`, before any handler."""
    raw = b'{"email": "%s", "password": "long enough", ' % unique_email().encode() + tail
    resp = await client.post("/api/v1/auth/register", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_json"


async def test_deep_json_in_an_authenticated_body(client: TestClient) -> None:
    user = await register(client)
    body = '{"name": "x", "tags": ' + "[" * 2000 + "]" * 2000 + "}"
    resp = await client.post(
        "/api/v1/personas", data=body, headers={**bearer(user), "Content-Type": "application/json"}
    )
    assert resp.status == 400, await resp.text()


# --- defect 9: a bad Authorization header on public endpoints -------------------------------------

PUBLIC = ("/healthz", "/readyz", "/api/v1/subscription/plans", "/api/openapi.json", "/api/docs")


def _bad_headers(client: TestClient, user: dict[str, Any]) -> dict[str, str]:
    signer = client.app[SIGNER]
    expired = signer.issue(
        user_id=uuid.UUID(user["user"]["id"]), session_version=0, role="user", now=time.time() - 3600
    )
    return {
        "garbage": "Bearer not-a-token",
        "scheme": "Basic dXNlcjpwYXNz",
        "empty": "Bearer ",
        "expired": f"Bearer {expired}",
        "unicode": "Bearer ²",
    }


async def test_public_endpoints_ignore_a_bad_authorization_header(client: TestClient) -> None:
    user = await register(client)
    for label, header in _bad_headers(client, user).items():
        for path in PUBLIC:
            resp = await client.get(path, headers={"Authorization": header})
            assert resp.status == 200, (label, path, resp.status, await resp.text())


async def test_public_endpoints_ignore_a_token_of_an_ended_session(client: TestClient) -> None:
    user = await register(client)
    assert (await client.post("/api/v1/auth/logout-all", headers=bearer(user))).status == 204
    for path in PUBLIC:
        assert (await client.get(path, headers=bearer(user))).status == 200, path
    login = {"email": user["user"]["email"], "password": "wrong password"}
    resp = await client.post("/api/v1/auth/login", json=login, headers=bearer(user))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_credentials"


async def test_endpoints_that_need_a_user_still_refuse_a_bad_header(client: TestClient) -> None:
    user = await register(client)
    codes = {}
    for label, header in _bad_headers(client, user).items():
        resp = await client.get("/api/v1/auth/me", headers={"Authorization": header})
        assert resp.status == 401, (label, await resp.text())
        codes[label] = (await resp.json())["error"]["code"]
    assert codes == {
        "garbage": "invalid_token",
        "scheme": "invalid_token",
        "empty": "invalid_token",
        "expired": "token_expired",
        "unicode": "invalid_token",
    }
    resp = await client.get("/api/v1/auth/me")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    assert (await client.get("/api/v1/auth/me", headers=bearer(user))).status == 200


# --- defect 10: an SSE client that hangs up ---------------------------------------------------------


class Live:
    """The app served like `web.run_app` serves it (no handler cancellation on disconnect, unlike the
    test server), so a hang-up surfaces as the failed write production sees."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture(params=["run_app", "test_server"])
async def served(request: Any, aiohttp_client: Any, settings: Settings) -> Any:
    # Demo tokens 100 ms apart: the stream is still going when the client hangs up, even on a busy machine.
    app = create_app(settings.model_copy(update={"demo_token_delay_ms": 100}))
    if request.param == "test_server":  # aiohttp's test server cancels the handler instead
        client = await aiohttp_client(app)
        yield str(client.make_url("")).rstrip("/")
        return
    live = Live(app)
    await live.start()
    yield live.url
    await live.runner.cleanup()


def _counted(metrics: str, route: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("parlor_http_requests_total{") and f'route="{route}"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


async def _hang_up_after_first_chunk(resp: Any) -> None:
    assert resp.status == 200, await resp.text()
    async for raw in resp.content:
        if raw.startswith(b"event: chunk"):
            break
    resp.close()


@pytest.mark.parametrize("resume", [False, True])
async def test_sse_client_hanging_up_is_a_client_disconnect(served: str, resume: bool) -> None:
    async with ClientSession(served) as http:
        resp = await http.post("/api/v1/auth/register", json={"email": unique_email(), "password": "long enough"})
        user = await resp.json()
        persona = await (await http.post("/api/v1/personas", json={"name": "Teller"}, headers=bearer(user))).json()
        resp = await http.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(user))
        chat = await resp.json()
        body = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": "tell me a long story"}
        route = "/api/v1/ai/stream"
        with structlog.testing.capture_logs() as logs:
            resp = await http.post(route, json=body, headers=bearer(user))
            if resume:
                start = await resp.content.readuntil(b"\r\n\r\n")
                stream_id = json.loads(start.decode().split("data: ", 1)[1])["stream_id"]
                resp.close()
                route = "/api/v1/ai/stream/{stream_id}"
                resp = await http.get(f"/api/v1/ai/stream/{stream_id}", headers=bearer(user))
            await _hang_up_after_first_chunk(resp)
            deadline = time.monotonic() + 20
            while True:
                counts = _counted(await (await http.get("/metrics")).text(), route)
                if "499" in counts:
                    break
                assert time.monotonic() < deadline, (counts, logs)
                await asyncio.sleep(0.1)
    assert "503" not in counts and "500" not in counts, counts
    events = [entry["event"] for entry in logs]
    assert "database unavailable" not in events and "unhandled error" not in events, logs
    gone = [entry for entry in logs if entry["event"] == "client disconnected"]
    assert gone and gone[0]["status"] == 499, logs
