"""A freshly migrated database per test module, and a pool on it per test. The stores are driven directly
with the pool's connections: each test opens the transactions itself, as a service would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from storage.db import create_pool, migrate

# Enough connections for the concurrency tests to overlap, few enough for a server shared by several runs.
POOL_SIZE = 10


@pytest.fixture(scope="module")
def migrated_dsn(empty_database: Callable[[], str]) -> str:
    dsn = empty_database()
    # In a thread with its own loop: a module-scoped fixture has no running loop to borrow.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate(dsn)).result()
    return dsn


@pytest.fixture
async def pool(migrated_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(migrated_dsn, min_size=1, max_size=POOL_SIZE)
    yield pool
    await pool.close()
