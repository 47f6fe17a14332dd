"""The three servers the bench measures: Parlor itself (`python -m server`) and the two comparators kept in
bench/ (the bare python-socketio relay and the bare Node socket.io relay). Each starts as one process, or
several behind one Redis, and offers the users (token + chat session) the load generator drives."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.infra import Infra, Proc, free_port

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
NODE_RELAY = BENCH / "node_relay"
LOADGEN = BENCH / "loadgen"
PASSWORD = "bench password 1234"

# Parlor variables the bench sets itself; inherited values of these are dropped.
_PARLOR_VARS = (
    "HOST",
    "PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PREFIX",
    "JWT_SECRET",
    "DATA_DIR",
    "SEND_RATE_PER_MINUTE",
    "LOGIN_RATE_PER_MINUTE",
    "REGISTER_RATE_PER_HOUR",
    "GEMINI_API_KEY",
    "OPENAI_BASE_URL",
    "AI_PROVIDER",
    "FREE_DAILY_MESSAGES",
    # Tuning settings stay at Parlor's defaults, whatever the developer's shell exports.
    "LISTEN_BACKLOG",
    "GC_TUNING",
)


@dataclass(frozen=True)
class BenchUser:
    token: str
    session_id: str
    user_id: str

    def as_json(self) -> dict[str, str]:
        return {"token": self.token, "session_id": self.session_id, "user_id": self.user_id}


def ensure_npm(folder: Path) -> None:
    """`npm ci` in a bench Node package when its node_modules is missing."""
    if (folder / "node_modules").is_dir():
        return
    print(f"installing {folder.relative_to(REPO)} (npm ci) ...", file=sys.stderr, flush=True)
    # npm's output goes to stderr: stdout carries only the table.
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(folder)], check=True, stdout=sys.stderr)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PARLOR_VARS}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


class Target:
    name = ""
    label = ""

    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        self._users: list[BenchUser] = []

    async def start(self, nodes: int = 1, *, redis: bool = False) -> list[Proc]:
        procs = []
        for i in range(nodes):
            env = _base_env()
            env.update(HOST="127.0.0.1", PORT=str(free_port()))
            if redis:
                env.update(REDIS_URL=self.infra.start_redis(), REDIS_PREFIX=self.infra.redis_prefix(self.name))
            procs.append(await self._spawn(f"{self.name}-{i}", env))
        return procs

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        raise NotImplementedError

    async def users(self, count: int, url: str) -> list[BenchUser]:
        """At least `count` users, each with one chat session of its own."""
        if len(self._users) < count:
            self._users.extend(await self._make_users(len(self._users), count, url))
        return self._users[:count]

    async def _make_users(self, start: int, stop: int, url: str) -> list[BenchUser]:
        # Comparators accept any token: the token names the user; sessions are made on first use.
        return [
            BenchUser(f"user-{i}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()), f"user-{i}") for i in range(start, stop)
        ]


class Parlor(Target):
    name = "parlor"
    label = "Parlor"

    def __init__(
        self,
        infra: Infra,
        *,
        keep_persona: bool = False,
        log_level: str = "INFO",
    ) -> None:
        super().__init__(infra)
        self.jwt_secret = secrets.token_urlsafe(48)
        # Parlor starts an AI reply (and charges quota) only for a session with a persona. Deleting the
        # persona after creating the session gives the message path the relays emulate.
        self.keep_persona = keep_persona
        self.log_level = log_level
        what = "persona kept: demo AI replies" if keep_persona else "persona deleted: no AI replies"
        self.label = f"Parlor (python -m server, {what})"

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        assert self.infra.database_url, "start the database first"
        data_dir = self.infra.workdir / f"{name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            DATABASE_URL=self.infra.database_url,
            JWT_SECRET=self.jwt_secret,
            DATA_DIR=str(data_dir),
            SEND_RATE_PER_MINUTE="0",
            LOGIN_RATE_PER_MINUTE="0",
            REGISTER_RATE_PER_HOUR="0",
            # Set-up registers hundreds of users; cheap hashing keeps that fast (same code path).
            ARGON2_TIME_COST="1",
            ARGON2_MEMORY_KIB="8192",
            # One token per user for the whole run.
            ACCESS_TOKEN_TTL_SECONDS="7200",
            AI_PROVIDER="demo",
            SHUTDOWN_TIMEOUT_SECONDS="3",
            LOG_LEVEL=self.log_level,
            LOG_FORMAT="json",
            PYTHONPATH=str(REPO),
        )
        if self.keep_persona:
            # A message to a persona costs quota; 0 = unlimited, so the quota never stops the load.
            env["FREE_DAILY_MESSAGES"] = "0"
        # cwd is the data folder, so a developer's .env in the repository is not read.
        return await self.infra.spawn(
            name, [sys.executable, "-m", "server"], env=env, cwd=data_dir, health_path="/readyz"
        )

    async def _make_users(self, start: int, stop: int, url: str) -> list[BenchUser]:
        api = url + "/api/v1"
        sem = asyncio.Semaphore(8)
        run = self.infra.run_id

        async def one(http: aiohttp.ClientSession, i: int) -> BenchUser:
            async with sem:
                email = f"bench-{run}-{i}@example.com"
                tokens = await _post(http, f"{api}/auth/register", {"email": email, "password": PASSWORD}, None)
                token = tokens["access_token"]
                persona = await _post(http, f"{api}/personas", {"name": f"Bench {i}"}, token)
                session = await _post(http, f"{api}/chat/sessions", {"persona_id": persona["id"]}, token)
                if not self.keep_persona:
                    # A session without a persona stores and fans out messages but starts no AI reply:
                    # the message path the comparators emulate. (chat_sessions.persona_id: ON DELETE SET NULL)
                    async with http.delete(
                        f"{api}/personas/{persona['id']}", headers={"Authorization": f"Bearer {token}"}
                    ) as resp:
                        if resp.status != 204:
                            raise RuntimeError(f"DELETE persona: {resp.status} {await resp.text()}")
                return BenchUser(token, session["id"], tokens["user"]["id"])

        async with aiohttp.ClientSession() as http:
            return list(await asyncio.gather(*(one(http, i) for i in range(start, stop))))


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")
        return dict(await resp.json())


class PyRelay(Target):
    name = "py-relay"
    label = "python-socketio relay"

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        env["PYTHONPATH"] = str(REPO)
        return await self.infra.spawn(
            name, [sys.executable, "-m", "bench.py_relay"], env=env, cwd=self.infra.workdir, health_path="/healthz"
        )


class NodeRelay(Target):
    name = "node-relay"
    label = "Node socket.io relay"

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        ensure_npm(NODE_RELAY)
        return await self.infra.spawn(
            name, ["node", str(NODE_RELAY / "relay.mjs")], env=env, cwd=NODE_RELAY, health_path="/healthz"
        )


class LeanRelay(Target):
    """Diagnostic only (`--targets lean`): the ceiling of Python on aiohttp, one process (no Redis)."""

    name = "lean-relay"
    label = "lean Python relay (Socket.IO on aiohttp, no python-socketio)"

    async def start(self, nodes: int = 1, *, redis: bool = False) -> list[Proc]:
        if nodes > 1:
            raise NotImplementedError("the lean relay runs as one process only")
        return await super().start(nodes, redis=redis)

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        env["PYTHONPATH"] = str(REPO)
        return await self.infra.spawn(
            name, [sys.executable, "-m", "bench.lean_relay"], env=env, cwd=self.infra.workdir, health_path="/healthz"
        )
