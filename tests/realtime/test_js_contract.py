"""The event contract, checked with the official JavaScript client (npm socket.io-client) under node."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.helpers import make_chat, register, server_url

JS_DIR = Path(__file__).resolve().parents[1] / "js"


async def test_socket_io_client_contract(client: TestClient) -> None:
    node = shutil.which("node")
    assert node, "node is required for the contract test"
    assert (JS_DIR / "node_modules" / "socket.io-client").exists(), "run: npm ci --prefix tests/js"
    user = await register(client)
    chat = await make_chat(client, user)
    env = {**os.environ, "PARLOR_URL": server_url(client), "TOKEN": user["access_token"], "SESSION_ID": chat["id"]}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "contract.mjs"),
        cwd=JS_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, stderr.decode() + stdout.decode()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["ok"] is True and len(summary["checks"]) == 12
