"""JobRunStore on PostgreSQL: of the processes that claim a scheduled run's slot together, one wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from storage.job_runs import JobRunStore

store = JobRunStore()


async def test_one_claim_wins_a_slot(pool: asyncpg.Pool) -> None:
    async def claim(node: str) -> bool:
        async with pool.acquire() as conn:
            return await store.claim(conn, job="expire", slot="2024-05-01T00:00", node=node)

    results = await asyncio.gather(*(claim(f"node-{i}") for i in range(6)))
    assert results.count(True) == 1
    winner = f"node-{results.index(True)}"
    async with pool.acquire() as conn:
        assert await store.claim(conn, job="expire", slot="2024-05-01T00:01", node="node-0")  # the next slot
        await store.finish(conn, job="expire", slot="2024-05-01T00:00", result={"expired": 3})
        runs = {r.slot: r for r in await store.for_job(conn, "expire")}
        assert runs["2024-05-01T00:00"].node == winner
        assert runs["2024-05-01T00:00"].result == {"expired": 3}
        assert runs["2024-05-01T00:00"].finished_at is not None
        assert runs["2024-05-01T00:01"].finished_at is None
        assert await store.prune(conn, before=datetime.now(UTC) - timedelta(days=1)) == 0
        assert await store.prune(conn, before=datetime.now(UTC) + timedelta(seconds=1)) == 2
        assert await store.for_job(conn, "expire") == []
