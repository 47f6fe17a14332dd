"""Running `python -m server` as real processes in tests: environment, start, health, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
OUR_VARS = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "HOST", "PORT", "DATA_DIR", "AI_PROVIDER", "GEMINI_API_KEY"}
LOW_COST = {
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_KIB": "8192",
    "LOGIN_RATE_PER_MINUTE": "0",
    "REGISTER_RATE_PER_HOUR": "0",
    "SEND_RATE_PER_MINUTE": "0",
    "FREE_DAILY_MESSAGES": "0",
}


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
