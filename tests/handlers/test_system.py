"""Health, readiness, metrics, OpenAPI and docs (issue 2, checks 1 and 6), rate limits, outages."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from server.app import create_app
from server.config import Settings
from tests.helpers import PASSWORD, free_port, make_settings, register, unique_email


async def test_healthz_and_readyz(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_request_id_echoed_and_generated(client: TestClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.headers["X-Request-ID"] != "bad id with spaces" and len(resp.headers["X-Request-ID"]) == 32


async def test_metrics_count_requests_and_sockets(client: TestClient) -> None:
    await client.get("/healthz")
    await client.get("/api/v1/auth/me")
    text = await (await client.get("/metrics")).text()
    assert 'parlor_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/api/v1/auth/me",status="401"' in text
    assert "parlor_http_request_duration_seconds_bucket" in text
    assert "parlor_sockets_connected" in text


async def test_openapi_is_valid_and_lists_every_route(client: TestClient) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    validate(doc)  # raises if the document is not valid OpenAPI 3.1
    assert doc["openapi"].startswith("3.1")
    listed = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    missing = []
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):
            path += "/{filename}"
        methods = ["GET", "POST"] if route.method == "*" else [route.method]
        missing += [(path, m) for m in methods if (path, m) not in listed]
    assert missing == []
    register_op = doc["paths"]["/api/v1/auth/register"]["post"]
    body_ref = register_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"email", "password"}
    assert schema["additionalProperties"] is False
    assert "422" in register_op["responses"] and "201" in register_op["responses"]
    assert "/socket.io/" in doc["paths"]


async def test_docs_page_served_locally(client: TestClient) -> None:
    page = await client.get("/api/docs")
    assert page.status == 200
    html = await page.text()
    assert "/api/docs/static/swagger-ui-bundle.js" in html and "http" not in html.replace("/api", "")
    js = await client.get("/api/docs/static/swagger-ui-bundle.js")
    assert js.status == 200 and len(await js.read()) > 100_000


async def test_login_rate_limit_per_account_and_ip(
    aiohttp_client: Any, database_url: str, redis_url: str, redis_prefix: str, tmp_path: Any
) -> None:
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix + "-rl",
        data_dir=tmp_path,
        login_rate_per_minute=3,
    )
    client = await aiohttp_client(create_app(settings))
    email = unique_email()
    await register(client, email)
    statuses = []
    for _ in range(4):
        resp = await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong pass"})
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited" and body["error"]["details"]["retry_after"] >= 1
    # Even the right password waits: the counter is per account and per IP.
    right = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert right.status == 429


async def test_redis_down_degrades_but_serves(aiohttp_client: Any, database_url: str, tmp_path: Any) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(database_url=database_url, redis_url=dead, data_dir=tmp_path)
    client = await aiohttp_client(create_app(settings))
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "degraded", "database": "ok", "redis": "down"}
    email = unique_email()
    await register(client, email)
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200


async def test_database_connections_killed_gives_503_then_recovers(client: TestClient, settings: Settings) -> None:
    session = await register(client)
    headers = {"Authorization": f"Bearer {session['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).status == 200
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    await admin.close()
    statuses = [(await client.get("/api/v1/auth/me", headers=headers)).status for _ in range(12)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200
    if 503 in statuses:
        resp = await client.get("/readyz")
        assert resp.status == 200


async def test_client_ip_from_trusted_proxy_only(
    aiohttp_client: Any, database_url: str, redis_url: str, redis_prefix: str, tmp_path: Any
) -> None:
    async def attempts(client: Any, forwarded_for: str) -> list[int]:
        statuses = []
        for _ in range(3):
            resp = await client.post(
                "/api/v1/auth/login",
                json={"email": unique_email(), "password": "wrong pass"},
                headers={"X-Forwarded-For": forwarded_for},
            )
            statuses.append(resp.status)
        return statuses

    base = {"database_url": database_url, "redis_url": redis_url, "data_dir": tmp_path, "login_rate_per_minute": 2}
    # Behind a trusted proxy (the test client is 127.0.0.1): each forwarded client has its own limit.
    proxied = await aiohttp_client(
        create_app(make_settings(**base, redis_prefix=redis_prefix + "-xff1", trusted_proxies="127.0.0.1/32"))
    )
    assert await attempts(proxied, "203.0.113.7") == [401, 401, 429]
    assert (await attempts(proxied, "spoofed, 203.0.113.8"))[0] == 401  # a new client, whatever it prepends
    # Not trusted: the header is ignored, every request counts for the peer itself.
    direct = await aiohttp_client(create_app(make_settings(**base, redis_prefix=redis_prefix + "-xff2")))
    assert await attempts(direct, "198.51.100.1") == [401, 401, 429]
    assert await attempts(direct, "198.51.100.2") == [429, 429, 429]
