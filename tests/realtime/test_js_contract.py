"""The event contract, checked with the official JavaScript client (npm socket.io-client) under node."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.helpers import JS_DIR, make_chat, register, run_node_checks, server_url


async def test_socket_io_client_contract(client: TestClient) -> None:
    assert (JS_DIR / "node_modules" / "socket.io-client").exists(), "run: npm ci --prefix tests/js"
    user = await register(client)
    chat = await make_chat(client, user)
    env = {"PARLOR_URL": server_url(client), "TOKEN": user["access_token"], "SESSION_ID": chat["id"]}
    checks = await run_node_checks("contract.mjs", env, limit=60)
    assert len(checks) == 12
