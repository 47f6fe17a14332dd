"""Chat exports under load (issue 14): does rendering a long chat to PDF leave the event loop alone? One Parlor
process (`python -m server`, its in-process job worker); a chat of N messages in several scripts; then
`/healthz` is timed back to back, first with nothing else running and then while K PDF exports of that
chat run as jobs. Prints one table: export seconds and messages rendered per second, and the /healthz
p50/p99 of both phases with their ratio (the loop's responsiveness while PDFs render in their own
processes at the lowest CPU priority). A ratio, never a wall-clock limit: this machine is shared.

    .venv/bin/python -m bench.exports                # 3,000 messages, 2 exports at once
    .venv/bin/python -m bench.exports --quick        # 500 messages, 1 export: a smoke run
    .venv/bin/python -m bench.exports --repeat 3     # three rounds, median figures
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.infra import Infra
from bench.targets import BenchUser, Parlor

LINES = ("Plain Latin text about the harbour", "Привет, как дела?", "你好，世界", "こんにちは", "Emoji 😀🎉")  # noqa: RUF001
IDLE_SECONDS = 5.0
PROBE_PAUSE = 0.01  # between two /healthz probes
EXPORT_TIMEOUT = 600.0


async def fill_chat(dsn: str, session_id: str, messages: int) -> None:
    """A long chat written directly (the export reads it page by page like any other)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            INSERT INTO messages (session_id, seq, role, content)
            SELECT $1, n, CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'user' END,
                   'Message ' || n || ': ' || repeat(($2::text[])[1 + n % 5] || ' ', 8)
            FROM generate_series(1, $3) AS n
            """,
            uuid.UUID(session_id),
            list(LINES),
            messages,
        )
        await conn.execute("UPDATE chat_sessions SET last_seq = $2 WHERE id = $1", uuid.UUID(session_id), messages)
    finally:
        await conn.close()


async def probe(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    """/healthz latencies (ms), back to back, until `stop`."""
    times: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        async with http.get(f"{url}/healthz") as resp:
            await resp.read()
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PROBE_PAUSE)
    return times


async def export(http: aiohttp.ClientSession, url: str, user: BenchUser) -> float:
    """Seconds from the request to the job's success."""
    headers = {"Authorization": f"Bearer {user.token}"}
    started = time.perf_counter()
    async with http.post(
        f"{url}/api/v1/chat/sessions/{user.session_id}/export", json={"format": "pdf"}, headers=headers
    ) as resp:
        if resp.status != 202:
            raise RuntimeError(f"export: {resp.status} {await resp.text()}")
        job = await resp.json()
    deadline = started + EXPORT_TIMEOUT
    while time.perf_counter() < deadline:
        async with http.get(f"{url}/api/v1/jobs/{job['id']}", headers=headers) as resp:
            state = await resp.json()
        if state["status"] == "succeeded":
            return time.perf_counter() - started
        if state["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"export {state['status']}: {state['error']}")
        await asyncio.sleep(0.1)
    raise RuntimeError("export did not finish in time")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def one_round(url: str, users: list[BenchUser], messages: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        stop = asyncio.Event()
        idle_task = asyncio.create_task(probe(http, url, stop))
        await asyncio.sleep(IDLE_SECONDS)
        stop.set()
        idle = await idle_task
        stop = asyncio.Event()
        busy_task = asyncio.create_task(probe(http, url, stop))
        seconds = await asyncio.gather(*(export(http, url, u) for u in users))
        stop.set()
        busy = await busy_task
    return {
        "export_s": statistics.median(seconds),
        "msgs_per_s": messages * len(users) / max(seconds),
        "idle_p50": pct(idle, 50),
        "idle_p99": pct(idle, 99),
        "busy_p50": pct(busy, 50),
        "busy_p99": pct(busy, 99),
    }


def table(rounds: list[dict[str, Any]], messages: int, exports: int) -> str:
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    rows = [
        ("export seconds (median of the concurrent exports)", f"{median['export_s']:.2f}"),
        ("messages rendered per second (all exports)", f"{median['msgs_per_s']:,.0f}"),
        ("/healthz p50 ms: idle / during exports", f"{median['idle_p50']:.2f} / {median['busy_p50']:.2f}"),
        ("/healthz p99 ms: idle / during exports", f"{median['idle_p99']:.2f} / {median['busy_p99']:.2f}"),
        ("p99 ratio (during / idle)", f"{median['busy_p99'] / median['idle_p99']:.2f}"),
    ]
    width = max(len(r[0]) for r in rows)
    out = [f"PDF export of a {messages:,}-message chat, {exports} at once, {len(rounds)} round(s)", ""]
    out += [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|------:|"]
    out += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    for i, r in enumerate(rounds, 1):
        out.append(f"- round {i}: export {r['export_s']:.2f} s, p99 {r['idle_p99']:.2f} -> {r['busy_p99']:.2f} ms")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="parlor-bench-exports-") as tmp:
        infra = Infra(Path(tmp))
        try:
            dsn = await infra.start_database()
            target = Parlor(infra, log_level="WARNING")
            procs = await target.start(1)
            url = procs[0].url
            users = await target.users(args.exports, url)
            for user in users:
                await fill_chat(dsn, user.session_id, args.messages)
            rounds = [await one_round(url, users, args.messages) for _ in range(args.repeat)]
        finally:
            await infra.close()
    print(table(rounds, args.messages, args.exports))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--exports", type=int, default=2, help="PDF exports at once (each of its own chat)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="500 messages, 1 export")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.exports = 500, 1
    return args


def main() -> None:
    raise SystemExit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
