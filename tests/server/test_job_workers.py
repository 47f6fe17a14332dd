"""Jobs across processes (issue 14, check 5): a job queued on a server that is then killed runs on a
`python -m server worker` started afterwards; with two server processes every job runs exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.helpers import free_port
from tests.processes import LOW_COST, _env, _start, _stop, _wait_healthy

SECRET = "workers-secret-" + "w" * 40


async def call(port: int, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as resp,
    ):
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def queue_exports(port: int, users: int, per_user: int) -> list[str]:
    ids = []
    for _ in range(users):
        email = f"w-{uuid.uuid4().hex[:10]}@example.com"
        session = await call(port, "POST", "/api/v1/auth/register", {"email": email, "password": "correct horse 1"})
        for _ in range(per_user):
            job = await call(
                port, "POST", "/api/v1/usage/export", {"format": "csv", "async": True}, session["access_token"]
            )
            ids.append(job["id"])
    return ids


async def finished(dsn: str, ids: list[str], limit: float = 90) -> list[asyncpg.Record]:
    deadline = time.monotonic() + limit
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT id, status, attempts, result_file_id FROM jobs WHERE id = ANY($1::uuid[])", ids
            )
            if all(r["status"] in ("succeeded", "failed", "cancelled") for r in rows) and len(rows) == len(ids):
                return rows
            assert time.monotonic() < deadline, [r["status"] for r in rows]
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def start_worker(cwd: Path, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", "worker"],
        cwd=cwd,
        env=_env(**extra),
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / "worker.log", "wb"),
    )


async def test_a_job_queued_on_a_killed_server_runs_on_a_worker_started_later(
    tmp_path: Path, empty_database: Any, redis_url: str
) -> None:
    dsn = empty_database()
    port = free_port()
    common = {"DATABASE_URL": dsn, "REDIS_URL": redis_url, "JWT_SECRET": SECRET, **LOW_COST}
    # An API-only node: it queues jobs but runs none.
    api = _start(tmp_path, PORT=str(port), DATA_DIR=str(tmp_path / "api"), JOBS_CONCURRENCY="0", **common)
    worker = None
    try:
        await _wait_healthy(port)
        ids = await queue_exports(port, users=2, per_user=3)
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        conn = await asyncpg.connect(dsn)
        try:
            queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")
        finally:
            await conn.close()
        assert queued == len(ids)
        worker = start_worker(tmp_path, DATA_DIR=str(tmp_path / "worker"), JOBS_POLL_SECONDS="0.5", **common)
        rows = await finished(dsn, ids)
        assert {r["status"] for r in rows} == {"succeeded"}
        assert {r["attempts"] for r in rows} == {1}
    finally:
        if api.poll() is None:
            api.kill()
        if worker is not None:
            assert _stop(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]


async def test_two_processes_run_every_job_exactly_once(tmp_path: Path, empty_database: Any, redis_url: str) -> None:
    dsn = empty_database()
    ports = [free_port(), free_port()]
    common = {"DATABASE_URL": dsn, "REDIS_URL": redis_url, "JWT_SECRET": SECRET, "JOBS_CONCURRENCY": "3", **LOW_COST}
    procs = [
        _start(tmp_path, PORT=str(p), DATA_DIR=str(tmp_path / f"d{p}"), JOBS_POLL_SECONDS="0.3", **common)
        for p in ports
    ]
    try:
        await asyncio.gather(*(_wait_healthy(p) for p in ports))
        batches = await asyncio.gather(*(queue_exports(p, users=4, per_user=5) for p in ports))
        ids = [i for batch in batches for i in batch]
        rows = await finished(dsn, ids)
        assert {r["status"] for r in rows} == {"succeeded"}
        assert {r["attempts"] for r in rows} == {1}
        conn = await asyncpg.connect(dsn)
        try:
            files = await conn.fetchval("SELECT count(*) FROM files WHERE category = 'export'")
            runs = await conn.fetch("SELECT jsonb_array_length(runs) AS n FROM jobs WHERE id = ANY($1::uuid[])", ids)
        finally:
            await conn.close()
        # One run and one file per job: none ran twice, none was lost.
        assert files == len(ids)
        assert {r["n"] for r in runs} == {1}
    finally:
        for proc in procs:
            assert _stop(proc) == 0
