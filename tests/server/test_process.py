"""`python -m server` as a real process: embedded defaults (check 1), three processes on one empty
database (check 5), graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from storage.db import load_migrations
from tests.helpers import free_port
from tests.processes import _get, _start, _stop, _wait_healthy


async def test_embedded_defaults_start_and_stop_gracefully(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, PORT=str(port))
    try:
        await _wait_healthy(port)
        status, body = await _get(port, "/readyz")
        assert status == 200 and body["database"] == "ok" and body["redis"] == "disabled"
        assert (tmp_path / ".data" / "postgres" / "PG_VERSION").exists()
        assert (tmp_path / ".data" / "jwt_secret").exists()
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{port}/api/v1/auth/register",
                json={"email": "first@example.com", "password": "a long password"},
            )
            assert resp.status == 201
            session = await resp.json()
            me = await http.get(
                f"http://127.0.0.1:{port}/api/v1/auth/me",
                headers={"Authorization": f"Bearer {session['access_token']}"},
            )
            assert me.status == 200
    finally:
        code = _stop(proc)
    assert code == 0
    log = (tmp_path / f"server-{port}.log").read_text()
    for secret in ("a long password", session["access_token"], session["refresh_token"]):
        assert secret not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    me_line = next(line for line in lines if line.get("path") == "/api/v1/auth/me")
    assert me_line["user_id"] == session["user"]["id"] and len(me_line["request_id"]) == 32


async def test_three_processes_on_one_empty_database(tmp_path: Path, empty_database: Any) -> None:
    dsn = empty_database()
    ports = [free_port() for _ in range(3)]
    procs = [
        _start(tmp_path, PORT=str(p), DATABASE_URL=dsn, JWT_SECRET="s" * 48, DATA_DIR=str(tmp_path / f"d{p}"))
        for p in ports
    ]
    try:
        await asyncio.gather(*(_wait_healthy(p) for p in ports))
        for port in ports:
            status, body = await _get(port, "/readyz")
            assert status == 200 and body["database"] == "ok"
        conn = await asyncpg.connect(dsn)
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        await conn.close()
        assert versions == [m.version for m in load_migrations()]
    finally:
        codes = [_stop(p) for p in procs]
    assert codes == [0, 0, 0]
