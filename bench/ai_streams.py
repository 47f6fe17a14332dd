"""AI reply streaming benchmark (issue 4): N concurrent replies from a fake Gemini upstream sending at a
fixed token rate, through one Parlor process, to N sockets. Prints the delay Parlor adds between an
upstream token leaving the fake and the client receiving it (p50, p99), the first chunk's added delay,
and server CPU per stream.

    python -m bench.ai_streams                 # N = 100, 500, 1000
    python -m bench.ai_streams --streams 50 --tokens 20   # a quick look

Every token carries its send time (CLOCK_MONOTONIC, shared by all processes on the machine), so the
upstream, the server and the clients run as separate processes and no clock is compared across hosts.
Coalescing (AI_COALESCE_MS, 25 ms) is part of what is measured: it is delay Parlor chooses to add."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import socketio
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r"~(\d+)~")
STREAMS_PER_USER = 10


# --- the fake upstream (run as its own process) ------------------------------------------------


def upstream_app(rate: float, tokens: int) -> web.Application:
    gap = 1.0 / rate

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(tokens):
            await asyncio.sleep(gap)
            text = f"~{time.monotonic_ns()}~ "
            chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        last = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": tokens, "totalTokenCount": 10 + tokens},
        }
        await response.write(f"data: {json.dumps(last)}\r\n\r\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{version}/models/{target}", stream)
    return app


# --- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def wait_http(url: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stream:
    socket: socketio.AsyncClient
    session_id: str
    delays_ms: list[float] = field(default_factory=list)
    first_ms: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None


# --- one run -----------------------------------------------------------------------------------


async def setup_streams(base: str, n: int) -> list[Stream]:
    streams: list[Stream] = []
    async with aiohttp.ClientSession() as http:
        users = (n + STREAMS_PER_USER - 1) // STREAMS_PER_USER
        for _ in range(users):
            email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
            async with http.post(
                f"{base}/api/v1/auth/register", json={"email": email, "password": "bench pass 1"}
            ) as r:
                token = (await r.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{base}/api/v1/personas", json={"name": "Bench"}, headers=headers) as r:
                persona = (await r.json())["id"]
            for _ in range(min(STREAMS_PER_USER, n - len(streams))):
                async with http.post(
                    f"{base}/api/v1/chat/sessions", json={"persona_id": persona}, headers=headers
                ) as r:
                    session_id = (await r.json())["id"]
                sio = socketio.AsyncClient(reconnection=False)
                await sio.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=30)
                ack = await sio.call("chat:join", {"session_id": session_id}, timeout=30)
                assert ack["ok"], ack
                streams.append(Stream(sio, session_id))
    return streams


def listen(stream: Stream) -> None:
    @stream.socket.on("ai:chunk")
    async def chunk(data: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        sent = [int(x) for x in TOKEN.findall(data["text"])]
        if not sent:
            return
        if stream.first_ms is None:
            stream.first_ms = (now - sent[0]) / 1e6
        stream.delays_ms.extend((now - s) / 1e6 for s in sent)

    @stream.socket.on("ai:done")
    async def done(data: dict[str, Any]) -> None:
        stream.done.set()

    @stream.socket.on("ai:error")
    async def error(data: dict[str, Any]) -> None:
        stream.error = data.get("code")
        stream.done.set()


async def run_once(base: str, server: psutil.Process, n: int, tokens: int, rate: float) -> dict[str, Any]:
    streams = await setup_streams(base, n)
    for stream in streams:
        listen(stream)
    me = psutil.Process()
    cpu_server0, cpu_me0 = server.cpu_times(), me.cpu_times()
    started = time.monotonic()
    await asyncio.gather(
        *(
            s.socket.call(
                "message:send",
                {"session_id": s.session_id, "client_id": str(uuid.uuid4()), "content": "go"},
                timeout=60,
            )
            for s in streams
        )
    )
    expected = tokens / rate
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), timeout=expected * 4 + 60)
    elapsed = time.monotonic() - started
    cpu_server1, cpu_me1 = server.cpu_times(), me.cpu_times()
    # python-socketio's client runs each event handler as its own task: let the last chunks land.
    settle = time.monotonic() + 15
    while sum(len(s.delays_ms) for s in streams) < n * tokens and time.monotonic() < settle:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for s in streams:
        await s.socket.disconnect()
    delays = [d for s in streams for d in s.delays_ms]
    firsts = [s.first_ms for s in streams if s.first_ms is not None]
    server_cpu = (cpu_server1.user + cpu_server1.system) - (cpu_server0.user + cpu_server0.system)
    own_cpu = (cpu_me1.user + cpu_me1.system) - (cpu_me0.user + cpu_me0.system)
    return {
        "streams": n,
        "errors": sum(1 for s in streams if s.error),
        "tokens_received": len(delays),
        "tokens_expected": n * tokens,
        "p50_ms": statistics.median(delays) if delays else float("nan"),
        "p99_ms": percentile(delays, 0.99),
        "first_p50_ms": statistics.median(firsts) if firsts else float("nan"),
        "first_p99_ms": percentile(firsts, 0.99),
        "server_cpu_ms_per_stream": server_cpu * 1000 / n,
        "server_cpu_pct": server_cpu / elapsed * 100,
        "loadgen_cpu_pct": own_cpu / elapsed * 100,
        "seconds": elapsed,
    }


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="parlor-aibench-"))
    db_name = f"parlor_bench_{uuid.uuid4().hex[:8]}"
    embedded = None
    if port_open(5432):
        admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        import pgserver

        embedded = pgserver.get_server(work / "pg", cleanup_mode="stop")
        admin_dsn = embedded.get_uri()
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db_name}"')
    await conn.close()
    dsn = (
        admin_dsn.replace("/postgres", f"/{db_name}", 1)
        if "?" in admin_dsn
        else admin_dsn.rsplit("/", 1)[0] + f"/{db_name}"
    )

    up_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost")
    upstream = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [
            sys.executable,
            "-m",
            "bench.ai_streams",
            "--upstream",
            str(up_port),
            "--rate",
            str(args.rate),
            "--tokens",
            str(args.tokens),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server_env = {
        **env,
        "PORT": str(port),
        "DATABASE_URL": dsn,
        "DATA_DIR": str(work / "data"),
        "JWT_SECRET": "b" * 48,
        "AI_PROVIDER": "gemini",
        "GEMINI_API_KEY": "bench",
        "GEMINI_BASE_URL": f"http://127.0.0.1:{up_port}",
        "SEND_RATE_PER_MINUTE": "0",
        "LOGIN_RATE_PER_MINUTE": "0",
        "REGISTER_RATE_PER_HOUR": "0",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8192",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX": "20",
    }
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-m", "server"], cwd=ROOT, env=server_env, stdout=log, stderr=log
    )
    rows = []
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz")
        await wait_http(f"http://127.0.0.1:{up_port}/")
        proc = psutil.Process(server.pid)
        for n in args.streams:
            print(f"running {n} concurrent replies...", file=sys.stderr)
            rows.append(await run_once(base, proc, n, args.tokens, args.rate))
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(30)
        upstream.wait(10)
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await conn.close()
        if embedded is not None:
            embedded.cleanup()
    print(
        f"\nAI streaming: {args.tokens} tokens per reply at {args.rate:g} tokens/s, one Parlor process, "
        f"coalescing 25 ms, {os.cpu_count()} cores\n"
    )
    header = (
        "streams",
        "errors",
        "tokens",
        "added p50 ms",
        "added p99 ms",
        "first p50 ms",
        "first p99 ms",
        "server CPU ms/stream",
        "server CPU %",
        "loadgen CPU %",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(
            " | ".join(
                [
                    str(r["streams"]),
                    str(r["errors"]),
                    f"{r['tokens_received']}/{r['tokens_expected']}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['first_p50_ms']:.1f}",
                    f"{r['first_p99_ms']:.1f}",
                    f"{r['server_cpu_ms_per_stream']:.1f}",
                    f"{r['server_cpu_pct']:.0f}",
                    f"{r['loadgen_cpu_pct']:.0f}",
                ]
            )
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500, 1000])
    parser.add_argument("--tokens", type=int, default=40, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=10.0, help="upstream tokens per second per reply")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # internal: run the fake upstream
    args = parser.parse_args()
    if args.upstream:
        raise_fd_limit()
        web.run_app(
            upstream_app(args.rate, args.tokens), host="127.0.0.1", port=args.upstream, print=None, access_log=None
        )
        return
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
