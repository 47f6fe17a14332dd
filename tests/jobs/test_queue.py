"""The job queue end to end on a real PostgreSQL: procrastinate's worker inside the app runs JobService's
jobs (issue 14, checks 1-3): priority, retries with backoff, the attempt limit, cancel of a queued and of a
running job. Test kinds are registered on the running app's JobService; each test has its own database so
that no other test's jobs share its worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import JOB_SERVICE
from server.app import create_app
from services.jobs import JobKind, JobRun
from tests.helpers import bearer, make_settings, register, wait_until


@pytest.fixture
async def one_worker(
    aiohttp_client: Any, empty_database: Any, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[TestClient]:
    settings = make_settings(
        database_url=empty_database(),
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path,
        jobs_concurrency=1,
        jobs_poll_seconds=0.2,
        jobs_max_in_flight=0,
    )
    yield await aiohttp_client(create_app(settings))


async def job_of(client: TestClient, session: dict[str, Any], job_id: UUID | str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/jobs/{job_id}", headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def until_status(
    client: TestClient, session: dict[str, Any], job_id: UUID | str, *statuses: str, limit: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        job = await job_of(client, session, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}: {job}"
        await asyncio.sleep(0.05)


class Blocker:
    """A kind whose jobs hold the worker until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, run: JobRun) -> dict[str, Any]:
        self.started.set()
        await self.release.wait()
        return {}


async def hold_the_worker(client: TestClient, user: dict[str, Any], names: list[str]) -> Blocker:
    """The one worker busy with a blocker job; `test_record` jobs append their `name` param to `names`."""
    jobs = client.app[JOB_SERVICE]
    blocker = Blocker()

    async def record(run: JobRun) -> dict[str, Any]:
        names.append(run.params["name"])
        return {"name": run.params["name"]}

    jobs.register(JobKind("test_block", blocker))
    jobs.register(JobKind("test_record", record))
    await jobs.create(UUID(user["user"]["id"]), "test_block", {})
    await asyncio.wait_for(blocker.started.wait(), 10)
    return blocker


async def test_a_high_priority_job_runs_before_queued_low_ones(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    user = await register(client)
    uid = UUID(user["user"]["id"])
    order: list[str] = []
    blocker = await hold_the_worker(client, user, order)
    for i in range(5):
        await jobs.create(uid, "test_record", {"name": f"low-{i}"}, priority=0)
    high = await jobs.create(uid, "test_record", {"name": "high"}, priority=10)
    assert (await job_of(client, user, high.id))["status"] == "queued"
    blocker.release.set()
    await wait_until(lambda: len(order) == 6, limit=20)
    assert order[0] == "high"
    assert sorted(order[1:]) == [f"low-{i}" for i in range(5)]


async def test_a_job_failing_twice_succeeds_on_its_third_attempt_after_backoff(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    user = await register(client)
    calls: list[float] = []

    async def flaky(run: JobRun) -> dict[str, Any]:
        calls.append(time.monotonic())
        if run.attempt < 3:
            raise ConnectionError(f"upstream down (attempt {run.attempt})")
        return {"ok": True}

    jobs.register(JobKind("test_flaky", flaky, max_attempts=4, backoff_seconds=0.5))
    job = await jobs.create(UUID(user["user"]["id"]), "test_flaky", {})
    done = await until_status(client, user, job.id, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3
    assert done["result"] == {"ok": True}
    assert done["error"] is None and done["progress"] == 1.0
    runs = done["runs"]
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    assert runs[0]["error"] == "ConnectionError: upstream down (attempt 1)"
    assert runs[2]["error"] is None
    # The backoff is in the timestamps: 0.5 s after the first failure, 1 s after the second.
    for failed, following, wait in ((runs[0], runs[1], 0.5), (runs[1], runs[2], 1.0)):
        ended = datetime.fromisoformat(failed["finished_at"].replace("Z", "+00:00"))
        due = datetime.fromisoformat(failed["retry_at"].replace("Z", "+00:00"))
        started = datetime.fromisoformat(following["started_at"].replace("Z", "+00:00"))
        assert (due - ended).total_seconds() == pytest.approx(wait, abs=0.1)
        assert started >= due
    assert len(calls) == 3


async def test_a_job_that_always_fails_ends_failed_after_the_limit(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    user = await register(client)

    async def broken(run: JobRun) -> dict[str, Any]:
        raise ValueError("the input is bad")

    jobs.register(JobKind("test_broken", broken, max_attempts=2, backoff_seconds=0.2))
    job = await jobs.create(UUID(user["user"]["id"]), "test_broken", {})
    done = await until_status(client, user, job.id, "failed", "succeeded")
    assert done["status"] == "failed"
    assert done["attempts"] == 2 and len(done["runs"]) == 2
    assert done["error"] == "ValueError: the input is bad"
    assert done["result"] is None and done["finished_at"] is not None


async def test_a_cancelled_queued_job_never_runs(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    user = await register(client)
    uid = UUID(user["user"]["id"])
    ran: list[str] = []
    blocker = await hold_the_worker(client, user, ran)
    victim = await jobs.create(uid, "test_record", {"name": "victim"})
    other = await jobs.create(uid, "test_record", {"name": "other"})
    resp = await client.post(f"/api/v1/jobs/{victim.id}/cancel", headers=bearer(user))
    assert resp.status == 200
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelled" and cancelled["attempts"] == 0
    blocker.release.set()
    await until_status(client, user, other.id, "succeeded")
    await asyncio.sleep(0.5)
    assert ran == ["other"]
    assert (await job_of(client, user, victim.id))["status"] == "cancelled"
    # Cancelling again answers the job as it is.
    again = await client.post(f"/api/v1/jobs/{victim.id}/cancel", headers=bearer(user))
    assert (await again.json())["status"] == "cancelled"


async def test_a_running_job_is_cancelled_within_a_second(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    user = await register(client)
    started = asyncio.Event()
    stopped: list[str] = []

    async def forever(run: JobRun) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("cancelled")
            raise
        return {}

    jobs.register(JobKind("test_forever", forever))
    job = await jobs.create(UUID(user["user"]["id"]), "test_forever", {})
    await asyncio.wait_for(started.wait(), 10)
    asked = time.monotonic()
    resp = await client.post(f"/api/v1/jobs/{job.id}/cancel", headers=bearer(user))
    assert resp.status == 200
    done = await until_status(client, user, job.id, "cancelled", "failed", "succeeded", limit=10)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled" and stopped == ["cancelled"]
    # Generous against a loaded machine; the queue's abort notification takes milliseconds here.
    assert took < 5, took


async def test_jobs_are_their_owners_alone(one_worker: TestClient) -> None:
    client = one_worker
    jobs = client.app[JOB_SERVICE]
    owner, other = await register(client), await register(client)

    async def quick(run: JobRun) -> dict[str, Any]:
        return {}

    jobs.register(JobKind("test_quick", quick))
    job = await jobs.create(UUID(owner["user"]["id"]), "test_quick", {})
    for method, path in (("GET", f"/api/v1/jobs/{job.id}"), ("POST", f"/api/v1/jobs/{job.id}/cancel")):
        resp = await client.request(method, path, headers=bearer(other))
        assert resp.status == 404, (method, path)
        assert (await resp.json())["error"]["code"] == "not_found"
    listed = await (await client.get("/api/v1/jobs", headers=bearer(other))).json()
    assert listed == {"items": [], "next_cursor": None}
    mine = await (await client.get("/api/v1/jobs", headers=bearer(owner))).json()
    assert [j["id"] for j in mine["items"]] == [str(job.id)]


async def test_jobs_in_flight_are_limited_per_user(
    aiohttp_client: Any, empty_database: Any, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=empty_database(), redis_url=redis_url, data_dir=tmp_path, jobs_concurrency=0, jobs_max_in_flight=2
    )
    client = await aiohttp_client(create_app(settings))
    user, other = await register(client), await register(client)
    statuses = []
    for _ in range(3):
        resp = await client.post("/api/v1/usage/export", json={"format": "csv", "async": True}, headers=bearer(user))
        statuses.append(resp.status)
    assert statuses == [202, 202, 429]
    refused = await client.post("/api/v1/usage/export", json={"format": "csv", "async": True}, headers=bearer(user))
    assert refused.headers["Retry-After"]
    assert (await refused.json())["error"]["code"] == "too_many_jobs"
    # Concurrent creates cannot pass the limit either.
    answers = await asyncio.gather(
        *(
            client.post("/api/v1/usage/export", json={"format": "json", "async": True}, headers=bearer(other))
            for _ in range(6)
        )
    )
    assert sorted(a.status for a in answers) == [202, 202, 429, 429, 429, 429]
