"""Scheduled jobs (issue 5, check 6): each run happens once across processes — two apps on one database
running the same slot, APScheduler firing in two apps, and two real `python -m server` processes — and
the jobs' work: free-plan history cleanup (premium untouched) and housekeeping."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import BILLING_SETTINGS, SUBSCRIPTION_SERVICE
from scheduler.runner import slot_of
from server.app import create_app
from server.billing_wiring import SCHEDULED_RUNS, SCHEDULER
from server.config import Settings
from services.billing.config import BillingSettings
from services.schedule import RunOutcome
from tests.helpers import free_port, register

ROOT = Path(__file__).resolve().parents[2]


def quiet(**overrides: Any) -> BillingSettings:
    return BillingSettings(_env_file=None, **{"scheduler_enabled": False, **overrides})  # type: ignore[arg-type]


async def make_client(aiohttp_client: Any, settings: Settings, billing: BillingSettings) -> TestClient:
    app = create_app(settings)
    app[BILLING_SETTINGS] = billing
    return await aiohttp_client(app)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


async def old_and_new_messages(db: asyncpg.Connection, user_id: uuid.UUID, *, old: int, new: int) -> uuid.UUID:
    """A chat session holding `old` messages from 10 days ago and `new` ones from an hour ago."""
    session_id = await db.fetchval(
        "INSERT INTO chat_sessions (user_id, title, last_seq) VALUES ($1, 'old chat', $2) RETURNING id",
        user_id,
        old + new,
    )
    for seq in range(1, old + new + 1):
        age = timedelta(days=10) if seq <= old else timedelta(hours=1)
        await db.execute(
            "INSERT INTO messages (session_id, seq, role, content, created_at) VALUES ($1, $2, 'user', 'hi', $3)",
            session_id,
            seq,
            datetime.now(UTC) - age,
        )
    return uuid.UUID(str(session_id))


async def count_messages(db: asyncpg.Connection, session_id: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", session_id))


def test_slots_are_one_grid_for_every_process() -> None:
    at = datetime(2026, 11, 20, 10, 7, 42, 123456, tzinfo=UTC)
    assert slot_of(at, 300) == datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    assert slot_of(at, 3600) == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert slot_of(at, 1) == datetime(2026, 11, 20, 10, 7, 42, tzinfo=UTC)
    assert slot_of(at + timedelta(seconds=100), 300) == slot_of(at, 300)


async def test_two_apps_running_one_slot_do_the_work_once(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    first = await make_client(aiohttp_client, settings, quiet())
    second = await make_client(aiohttp_client, settings, quiet())
    free_user, premium_user = await register(first), await register(first)
    free_id, premium_id = uuid.UUID(free_user["user"]["id"]), uuid.UUID(premium_user["user"]["id"])
    await first.app[SUBSCRIPTION_SERVICE].set_admin_plan(premium_id, plan="premium")
    free_chat = await old_and_new_messages(db, free_id, old=3, new=2)
    premium_chat = await old_and_new_messages(db, premium_id, old=3, new=2)
    # A Google Play subscription whose period ended: with Play not configured, the dates decide.
    await db.execute(
        "INSERT INTO subscriptions (user_id, provider, external_id, plan, period, status, current_period_end)"
        " VALUES ($1, 'google_play', $2, 'premium', 'monthly', 'active', now() - interval '1 hour')",
        free_id,
        f"tok-{uuid.uuid4().hex}",
    )
    slot = datetime.now(UTC)
    for job in ("history_cleanup", "subscriptions"):
        outcomes: list[RunOutcome] = await asyncio.gather(
            first.app[SCHEDULER].run(job, slot), second.app[SCHEDULER].run(job, slot)
        )
        assert sorted(o.ran for o in outcomes) == [False, True], job
        winner = next(o for o in outcomes if o.ran)
        loser = next(o for o in outcomes if not o.ran)
        assert loser.result is None and winner.result is not None and "error" not in winner.result
        rows = await db.fetch("SELECT node, finished_at FROM job_runs WHERE job = $1 AND slot = $2", job, winner.slot)
        assert len(rows) == 1 and rows[0]["finished_at"] is not None
        nodes = {first.app[SCHEDULED_RUNS].node, second.app[SCHEDULED_RUNS].node}
        assert rows[0]["node"] in nodes
        # Running the slot again later (a late process) does nothing either.
        again = await first.app[SCHEDULER].run(job, slot)
        assert not again.ran

    assert await count_messages(db, free_chat) == 2, "the free user's old history is gone"
    assert await count_messages(db, premium_chat) == 5, "premium history is never touched"
    status = await db.fetchval(
        "SELECT status FROM subscriptions WHERE user_id = $1 AND provider = 'google_play'", free_id
    )
    assert status == "in_grace"
    assert await db.fetchval("SELECT plan FROM users WHERE id = $1", free_id) == "premium"


async def test_free_history_days_zero_keeps_everything(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    client = await make_client(aiohttp_client, settings.model_copy(update={"free_history_days": 0}), quiet())
    user = await register(client)
    chat = await old_and_new_messages(db, uuid.UUID(user["user"]["id"]), old=2, new=1)
    outcome = await client.app[SCHEDULER].run("history_cleanup", datetime.now(UTC))
    assert outcome.ran and outcome.result is not None and outcome.result["deleted_messages"] == {}
    assert await count_messages(db, chat) == 3


async def test_housekeeping_prunes_only_old_rows(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    client = await make_client(aiohttp_client, settings, quiet(usage_retention_days=400))
    user = await register(client)
    user_id = uuid.UUID(user["user"]["id"])
    today = date.today()
    for day in (today - timedelta(days=500), today - timedelta(days=10)):
        await db.execute("INSERT INTO usage_daily (user_id, day, messages) VALUES ($1, $2, 1)", user_id, day)
    old_event = f"evt_{uuid.uuid4().hex}"
    await db.execute(
        "INSERT INTO billing_events (provider, event_id, type, received_at)"
        " VALUES ('stripe', $1, 'x', now() - interval '500 days')",
        old_event,
    )
    outcome = await client.app[SCHEDULER].run("housekeeping", datetime.now(UTC))
    assert outcome.ran and outcome.result is not None
    assert outcome.result["usage_rows"] >= 1 and outcome.result["billing_events"] >= 1
    days = [r["day"] for r in await db.fetch("SELECT day FROM usage_daily WHERE user_id = $1", user_id)]
    assert days == [today - timedelta(days=10)]
    assert await db.fetchval("SELECT count(*) FROM billing_events WHERE event_id = $1", old_event) == 0


async def test_apscheduler_fires_on_the_grid_and_each_slot_runs_once(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    fast = quiet(scheduler_enabled=True, job_subscriptions_seconds=1)
    clients = [await make_client(aiohttp_client, settings, fast) for _ in range(2)]
    seen: list[tuple[str, str, bool]] = []
    for client in clients:
        runs = client.app[SCHEDULED_RUNS]
        original = runs.run_once

        async def recording(job: str, slot: str, work: Any, _original: Any = original, _node: str = runs.node) -> Any:
            outcome = await _original(job, slot, work)
            seen.append((_node, slot, outcome.ran))
            return outcome

        runs.run_once = recording  # type: ignore[method-assign]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        slots: dict[str, list[bool]] = {}
        for _, slot, ran in seen:
            slots.setdefault(slot, []).append(ran)
        if sum(1 for v in slots.values() if len(v) == 2) >= 2:
            break
    both = {slot: ran for slot, ran in slots.items() if len(ran) == 2}
    assert len(both) >= 2, f"both apps should fire the same slots: {seen}"
    for slot, ran in both.items():
        assert sorted(ran) == [False, True], slot
        assert slot.endswith("Z") and "." not in slot, "slots are whole grid instants"
    rows = await db.fetch(
        "SELECT slot FROM job_runs WHERE job = 'subscriptions' AND slot = ANY($1::text[])", list(both)
    )
    assert len(rows) == len(both)


# --- two real processes ------------------------------------------------------------------------


def _start(tmp_path: Path, port: int, dsn: str) -> subprocess.Popen[bytes]:
    ours = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "HOST", "PORT", "DATA_DIR", "AI_PROVIDER", "LOG_FORMAT"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours and not k.upper().startswith("JOB_")}
    env.update(
        PYTHONPATH=str(ROOT),
        PORT=str(port),
        DATABASE_URL=dsn,
        JWT_SECRET="s" * 48,
        DATA_DIR=str(tmp_path / f"d{port}"),
        LOG_FORMAT="json",
        JOB_SUBSCRIPTIONS_SECONDS="1",
        JOB_HISTORY_CLEANUP_SECONDS="1",
        JOB_HOUSEKEEPING_SECONDS="2",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"server-{port}.log", "wb"),
    )


async def _wait_healthy(port: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"server on {port} not healthy within {limit}s")


def _job_lines(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") in ("job run", "job slot taken", "job done")]


async def test_two_server_processes_run_each_scheduled_slot_once(tmp_path: Path, empty_database: Any) -> None:
    dsn = empty_database()
    ports = [free_port(), free_port()]
    procs = [_start(tmp_path, port, dsn) for port in ports]
    try:
        await asyncio.gather(*(_wait_healthy(p) for p in ports))
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{ports[0]}/api/v1/auth/register",
                json={"email": f"jobs-{uuid.uuid4().hex[:8]}@example.com", "password": "a long password"},
            )
            assert resp.status == 201
            user_id = uuid.UUID((await resp.json())["user"]["id"])
        conn = await asyncpg.connect(dsn)
        try:
            chat = await old_and_new_messages(conn, user_id, old=4, new=1)
            for _ in range(100):  # the next history_cleanup slot (1 s) deletes the old ones
                if await count_messages(conn, chat) == 1:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)  # a few more slots in which both processes compete
        finally:
            await conn.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
    assert codes == [0, 0]

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT job, slot, node, result FROM job_runs")
        remaining = await count_messages(conn, chat)
    finally:
        await conn.close()
    assert remaining == 1, "the old history was deleted"

    logs = {port: _job_lines(tmp_path / f"server-{port}.log") for port in ports}
    ran: dict[tuple[str, str], list[int]] = {}
    attempted: dict[tuple[str, str], set[int]] = {}
    for port, lines in logs.items():
        for line in lines:
            key = (line["job"], line["slot"])
            attempted.setdefault(key, set()).add(port)
            if line["event"] == "job run":
                ran.setdefault(key, []).append(port)
    assert ran, "no job ran"
    assert all(len(ports_) == 1 for ports_ in ran.values()), "a slot ran in two processes"
    assert {(r["job"], r["slot"]) for r in rows} == set(ran), "job_runs holds exactly the runs that happened"
    contested = [key for key, ports_ in attempted.items() if len(ports_) == 2]
    assert contested, "both processes should fire the same slots"
    assert all(key in ran for key in contested), "a contested slot was run by one of them"
    results = [r["result"] for r in rows if r["job"] == "history_cleanup" and r["result"]]
    deleted = sum(json.loads(r).get("deleted_messages", {}).get("free", 0) for r in results)
    assert deleted == 4, "the old messages were deleted once, by one run"
