"""The other job kinds over REST: a large knowledge file ingested by a job with progress per page, a usage
export as a job, and the scheduler's expiry of job results (their file deleted, their link dropped)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from server.billing_wiring import SCHEDULER
from tests.fixtures.files import make_pdf
from tests.helpers import Inbox, bearer, connect_socket, make_persona, register, wait_until
from tests.jobs.test_queue import until_status


async def upload(client: TestClient, session: dict[str, Any], data: bytes, name: str, category: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("category", category)
    form.add_field("file", data, filename=name)
    resp = await client.post("/api/v1/files/upload", data=form, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_a_large_pdf_becomes_knowledge_through_a_job(client: TestClient) -> None:
    user, other = await register(client), await register(client)
    persona = await make_persona(client, user)
    pages = [f"Page {i} tells about the lighthouse keeper number {i} and the harbour." for i in range(1, 31)]
    stored = await upload(client, user, make_pdf(pages), "keepers.pdf", "knowledge_base")
    sio = await connect_socket(client, user["access_token"])
    inbox = Inbox(sio, "job:progress")
    try:
        resp = await client.post(
            f"/api/v1/personas/{persona['id']}/knowledge", json={"file_id": stored["id"]}, headers=bearer(user)
        )
        assert resp.status == 202, await resp.text()
        job = await resp.json()
        assert job["kind"] == "knowledge_ingest"
        done = await until_status(client, user, job["id"], "succeeded", "failed", limit=60)
        assert done["status"] == "succeeded", done
        await wait_until(lambda: any(e["status"] == "succeeded" for e in inbox["job:progress"]))
    finally:
        await sio.disconnect()
    events = [e for e in inbox["job:progress"] if e["job_id"] == job["id"]]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    # Every page reports ("page i of n", tests/services/test_knowledge_ingest.py); the job passes on at
    # most four a second, so a fast machine may show none of them here.
    assert events[-1]["step"] == "done"
    entries = await (await client.get(f"/api/v1/personas/{persona['id']}/knowledge", headers=bearer(user))).json()
    assert [e["id"] for e in entries["items"]] == [done["result"]["entry_id"]]
    assert done["result"]["chunks"] >= 1
    # Small files stay inline; `async: true` makes a job of any file; another user's persona is refused at once.
    small = await upload(client, user, make_pdf(["one short page"]), "short.pdf", "knowledge_base")
    resp = await client.post(
        f"/api/v1/personas/{persona['id']}/knowledge", json={"file_id": small["id"]}, headers=bearer(user)
    )
    assert resp.status == 201
    resp = await client.post(
        f"/api/v1/personas/{persona['id']}/knowledge",
        json={"file_id": small["id"], "async": True},
        headers=bearer(user),
    )
    assert resp.status == 202
    resp = await client.post(
        f"/api/v1/personas/{persona['id']}/knowledge",
        json={"file_id": stored["id"], "async": True},
        headers=bearer(other),
    )
    assert resp.status == 404


async def test_expired_results_lose_their_file_and_link(client: TestClient, database_url: str) -> None:
    user = await register(client)
    resp = await client.post("/api/v1/usage/export", json={"format": "json", "async": True}, headers=bearer(user))
    assert resp.status == 202
    done = await until_status(client, user, (await resp.json())["id"], "succeeded", "failed")
    assert done["status"] == "succeeded"
    url, file_id = done["result"]["url"], done["result"]["file_id"]
    assert (await client.get(url)).status == 200
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET result_expires_at = now() - interval '1 minute' WHERE id = $1", uuid.UUID(done["id"])
        )
    finally:
        await conn.close()
    outcome = await client.app[SCHEDULER].run("job_results", datetime.now(UTC))
    assert outcome is not None
    expired = await (await client.get(f"/api/v1/jobs/{done['id']}", headers=bearer(user))).json()
    assert expired["result"]["expired"] is True and "url" not in expired["result"]
    assert (await client.get(f"/api/v1/files/{file_id}", headers=bearer(user))).status == 404
    assert (await client.get(url)).status == 404
