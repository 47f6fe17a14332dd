"""`python -m server` as a real process: embedded defaults (check 1), three processes on one empty
database (check 5), graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from storage.db import load_migrations
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
OUR_VARS = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "HOST", "PORT", "DATA_DIR", "AI_PROVIDER", "GEMINI_API_KEY"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in OUR_VARS}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _start(cwd: Path, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=cwd,
        env=_env(**extra),
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / f"server-{extra.get('PORT')}.log", "wb"),
    )


async def _wait_healthy(port: int, limit: float = 60) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < limit:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"server on {port} not healthy within {limit}s")


async def _get(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.json()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


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
