"""Chat export as a job (issue 14, checks 3, 4 and 6): JSON equal to the history, a TXT transcript, a PDF
that keeps Latin, Cyrillic and CJK text; progress events to every socket of the owner; a cancelled export
leaves no file."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from typing import Any

import asyncpg
import pypdf
from aiohttp.test_utils import TestClient

from tests.helpers import (
    Inbox,
    bearer,
    connect_socket,
    make_chat,
    make_plain_chat,
    register,
    send_message,
    settled_rows,
    wait_until,
)
from tests.jobs.test_queue import job_of, until_status

LINES = [
    "A plain Latin line for the export check",
    "Привет, как дела? Это строка на кириллице",
    "你好，世界。这是一行中文",  # noqa: RUF001
    "こんにちは世界、日本語の行です",
    "Emoji too 😀🎉 and a flag 🇯🇵",
]


async def history(client: TestClient, session: dict[str, Any], chat_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/chat/sessions/{chat_id}/messages?limit=200", headers=bearer(session))
    return list((await resp.json())["items"])


async def export(client: TestClient, session: dict[str, Any], chat_id: str, fmt: str) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/chat/sessions/{chat_id}/export", json={"format": fmt}, headers=bearer(session))
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


async def download(client: TestClient, job: dict[str, Any]) -> bytes:
    # The signed link works without a token.
    resp = await client.get(job["result"]["url"])
    assert resp.status == 200, await resp.text()
    return await resp.read()


async def test_exports_keep_every_message_in_each_format(client: TestClient, database_url: str) -> None:
    user = await register(client)
    chat = await make_chat(client, user, name="Yuki")
    for line in LINES:
        await send_message(client, user, chat["id"], line)
    await settled_rows(database_url, chat["id"])
    messages = await history(client, user, chat["id"])
    assert len(messages) > len(LINES)  # the persona answered too

    jobs = {fmt: await export(client, user, chat["id"], fmt) for fmt in ("json", "txt", "pdf")}
    for fmt, queued in jobs.items():
        assert queued["status"] in ("queued", "running") and queued["kind"] == "chat_export"
        done = await until_status(client, user, queued["id"], "succeeded", "failed", limit=60)
        assert done["status"] == "succeeded", done
        assert done["result"]["messages"] == len(messages)
        jobs[fmt] = done

    data = json.loads(await download(client, jobs["json"]))
    assert data["messages"] == messages  # message for message, every field as the history gives it
    assert data["session"]["id"] == chat["id"]

    text = (await download(client, jobs["txt"])).decode("utf-8")
    for message in messages:
        for line in message["content"].splitlines():
            assert line in text

    pdf = pypdf.PdfReader(io.BytesIO(await download(client, jobs["pdf"])))
    extracted = "\n".join(page.extract_text() or "" for page in pdf.pages)
    flat = " ".join(extracted.replace("\x00", "").split())
    for line in LINES[:4]:
        assert line in flat, line
    assert jobs["pdf"]["result"]["content_type"] == "application/pdf"


async def test_progress_reaches_every_socket_of_the_owner(client: TestClient, database_url: str) -> None:
    user, other = await register(client), await register(client)
    chat = await make_plain_chat(client, user)
    for i in range(30):
        await send_message(client, user, chat["id"], f"message {i} {LINES[i % len(LINES)]}")
    phones = []
    for _ in range(2):
        sio = await connect_socket(client, user["access_token"])
        phones.append((sio, Inbox(sio, "job:progress")))
    stranger = await connect_socket(client, other["access_token"])
    stranger_inbox = Inbox(stranger, "job:progress")
    try:
        job = await export(client, user, chat["id"], "pdf")
        for _, inbox in phones:
            await wait_until(lambda inbox=inbox: any(e["status"] == "succeeded" for e in inbox["job:progress"]), 60)
        for _, inbox in phones:
            events = [e for e in inbox["job:progress"] if e["job_id"] == job["id"]]
            progress = [e["progress"] for e in events]
            assert progress == sorted(progress), progress
            assert events[-1]["status"] == "succeeded" and events[-1]["progress"] == 1.0
            assert events[-1]["result"]["url"]
            assert events[0]["status"] == "queued"
        assert stranger_inbox["job:progress"] == []
        resp = await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(other))
        assert resp.status == 404
        resp = await client.post(
            f"/api/v1/chat/sessions/{chat['id']}/export", json={"format": "pdf"}, headers=bearer(other)
        )
        assert resp.status == 404
    finally:
        for sio, _ in phones:
            await sio.disconnect()
        await stranger.disconnect()


async def test_a_cancelled_export_stops_and_leaves_no_file(client: TestClient, database_url: str) -> None:
    user = await register(client)
    chat = await make_plain_chat(client, user)
    conn = await asyncpg.connect(database_url)
    try:
        # A long chat, written directly: the PDF takes seconds to render, time enough to cancel it.
        await conn.execute(
            """
            INSERT INTO messages (session_id, seq, role, content)
            SELECT $1, n, CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'user' END,
                   repeat('Line ' || n || ' Привет 你好 ', 20)
            FROM generate_series(1, 4000) AS n
            """,
            uuid.UUID(chat["id"]),
        )
        await conn.execute("UPDATE chat_sessions SET last_seq = 4000 WHERE id = $1", uuid.UUID(chat["id"]))
    finally:
        await conn.close()
    used_before = (await (await client.get("/api/v1/usage/current", headers=bearer(user))).json())["storage_used"]
    job = await export(client, user, chat["id"], "pdf")
    deadline = time.monotonic() + 60
    while (await job_of(client, user, job["id"]))["progress"] < 0.45:  # rendering
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    resp = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(user))
    assert resp.status == 200
    done = await until_status(client, user, job["id"], "cancelled", "succeeded", "failed", limit=30)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert done["result"] is None
    print(f"export cancelled {took:.2f} s after the request")
    assert took < 5, took  # within a second on an idle machine; generous for a loaded one
    files = await (await client.get("/api/v1/files?category=export", headers=bearer(user))).json()
    assert files["items"] == []
    used_after = (await (await client.get("/api/v1/usage/current", headers=bearer(user))).json())["storage_used"]
    assert used_after == used_before
