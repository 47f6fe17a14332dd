"""REST /api/v1/files on both blob stores (a folder under DATA_DIR, and S3 on a real S3-compatible server
started on 127.0.0.1): upload with the type taken from the bytes, images processed (rotated, stripped,
resized, thumbnailed), the storage quota under concurrent uploads, content with ETag and ranges, signed
links, delete, and every route refusing another user's file."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from PIL import ExifTags, Image

from server.app import create_app
from server.config import Settings
from tests.helpers import bearer, make_chat, make_settings, register

pytestmark = pytest.mark.timeout(120)
MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings that pick the blob store: none for the local folder, the S3_* ones for the fake S3."""
    if request.param == "local":
        yield {}
        return
    s3 = request.getfixturevalue("s3_server")
    settings = s3.settings()
    yield {
        "s3_bucket": settings.bucket,
        "s3_endpoint_url": settings.endpoint_url,
        "s3_region": settings.region,
        "s3_access_key_id": settings.access_key_id,
        "s3_secret_access_key": settings.secret_access_key,
    }


@pytest.fixture
def files_settings(settings: Settings, store: dict[str, Any]) -> Settings:
    return make_settings(**{**settings.model_dump(), **store, "free_storage_mb": 1, "upload_max_bytes": 2 * MIB})


@pytest.fixture
async def client(aiohttp_client: Any, files_settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(files_settings))


def form(data: bytes, filename: str, category: str = "chat_attachment") -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("category", category)
    body.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return body


async def upload(
    client: TestClient, user: dict[str, Any], data: bytes, filename: str, category: str = "chat_attachment"
) -> aiohttp.ClientResponse:
    return await client.post("/api/v1/files/upload", data=form(data, filename, category), headers=bearer(user))


async def uploaded(client: TestClient, user: dict[str, Any], data: bytes, filename: str, **kw: Any) -> dict[str, Any]:
    resp = await upload(client, user, data, filename, **kw)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def storage_used(client: TestClient, user: dict[str, Any]) -> int:
    resp = await client.get("/api/v1/usage/current", headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return int((await resp.json())["storage_used"])


def png(size: tuple[int, int] = (64, 48), mode: str = "RGBA", **info: str) -> bytes:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for key, value in info.items():
        meta.add_text(key, value)
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30)).save(out, "PNG", pnginfo=meta)
    return out.getvalue()


def jpeg_rotated_with_gps(size: tuple[int, int] = (3000, 1000)) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate 90° clockwise to display
    exif[ExifTags.Base.Make] = "Secret Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG", exif=exif, quality=80)
    return out.getvalue()


async def content(client: TestClient, user: dict[str, Any], file_id: str, **params: str) -> bytes:
    resp = await client.get(f"/api/v1/files/{file_id}/content", params=params, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return await resp.read()


async def test_a_jpeg_comes_back_upright_stripped_resized_and_thumbnailed(client: TestClient) -> None:
    user = await register(client)
    made = await uploaded(client, user, jpeg_rotated_with_gps(), "holiday.jpg", category="avatar")
    assert made["content_type"] == "image/jpeg" and made["thumbnail"] is True
    assert (made["width"], made["height"]) == (683, 2048)  # 3000x1000 turned upright, fitted to 2048
    stored = Image.open(io.BytesIO(await content(client, user, made["id"])))
    assert stored.size == (683, 2048) and stored.format == "JPEG"
    assert not dict(stored.getexif()) and "exif" not in stored.info
    thumb = Image.open(io.BytesIO(await content(client, user, made["id"], variant="thumbnail")))
    assert max(thumb.size) <= 256 and thumb.size[1] > thumb.size[0]


async def test_the_type_comes_from_the_bytes(client: TestClient) -> None:
    user = await register(client)
    made = await uploaded(client, user, png(), "photo.jpg")
    assert made["content_type"] == "image/png" and made["filename"] == "photo.jpg"
    assert Image.open(io.BytesIO(await content(client, user, made["id"]))).format == "PNG"
    html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
    resp = await upload(client, user, html, "x.png")
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_type"
    resp = await upload(client, user, b"just some notes\n", "notes.txt", category="avatar")
    assert resp.status == 415  # an avatar is an image
    text = await uploaded(client, user, b"# Heading\nnotes\n", "notes.md", category="knowledge_base")
    assert text["content_type"] == "text/markdown" and text["width"] is None and text["thumbnail"] is False


async def test_broken_and_bomb_images_are_refused_and_the_server_keeps_serving(client: TestClient) -> None:
    user = await register(client)
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 megapixels in a few KB
    assert len(bomb.getvalue()) < 100_000
    resp = await upload(client, user, bomb.getvalue(), "bomb.png")
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_file"
    me = await client.get("/api/v1/auth/me", headers=bearer(user))
    assert me.status == 200
    truncated = jpeg_rotated_with_gps((800, 600))[:2000]
    resp = await upload(client, user, truncated, "cut.jpg")
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_file"
    listed = await client.get("/api/v1/files", headers=bearer(user))
    assert (await listed.json())["items"] == []
    assert await storage_used(client, user) == 0


async def test_too_large_keeps_nothing(client: TestClient, files_settings: Settings) -> None:
    user = await register(client)
    resp = await upload(client, user, b"a" * (files_settings.upload_max_bytes + 1), "big.txt")
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    assert (await (await client.get("/api/v1/files", headers=bearer(user))).json())["items"] == []
    assert await storage_used(client, user) == 0
    assert await _blob_keys(client, user) == []


async def _blob_keys(client: TestClient, user: dict[str, Any]) -> list[str]:
    from handlers.keys import FILES_SERVICE

    files = client.server.app[FILES_SERVICE]
    return [key async for key in files._blobs.keys(f"files/{user['user']['id']}/")]


async def test_concurrent_uploads_never_pass_the_quota_and_delete_frees_it(client: TestClient) -> None:
    user = await register(client)
    size = 200_000  # 1 MiB quota: five fit (1,000,000 bytes), a sixth would not
    bodies = [bytes([65 + i % 26]) * size for i in range(20)]
    answers = await asyncio.gather(*(upload(client, user, body, f"n{i}.txt") for i, body in enumerate(bodies)))
    statuses = sorted(a.status for a in answers)
    assert statuses.count(201) == 5 and statuses.count(403) == 15, statuses
    refused = [a for a in answers if a.status == 403]
    assert {(await a.json())["error"]["code"] for a in refused} == {"storage_limit"}
    assert await storage_used(client, user) == 5 * size
    usage = await (await client.get("/api/v1/usage/current", headers=bearer(user))).json()
    assert usage["storage_limit"] == MIB
    assert len(await _blob_keys(client, user)) == 5  # the refused ones left no bytes behind
    first = await next(a for a in answers if a.status == 201).json()
    resp = await client.delete(f"/api/v1/files/{first['id']}", headers=bearer(user))
    assert resp.status == 204
    assert await storage_used(client, user) == 4 * size
    assert len(await _blob_keys(client, user)) == 4
    resp = await client.get(f"/api/v1/files/{first['id']}", headers=bearer(user))
    assert resp.status == 404


async def test_etag_range_and_headers(client: TestClient) -> None:
    user = await register(client)
    text = "héllo wörld\n".encode() * 100
    made = await uploaded(client, user, text, "hello.txt")
    resp = await client.get(f"/api/v1/files/{made['id']}/content", headers=bearer(user))
    assert resp.status == 200 and await resp.read() == text
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert (
        resp.headers["Content-Disposition"].startswith("attachment")
        and "hello.txt" in resp.headers["Content-Disposition"]
    )
    etag = resp.headers["ETag"]
    again = await client.get(f"/api/v1/files/{made['id']}/content", headers={**bearer(user), "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    part = await client.get(f"/api/v1/files/{made['id']}/content", headers={**bearer(user), "Range": "bytes=10-19"})
    assert part.status == 206 and await part.read() == text[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(text)}"
    tail = await client.get(f"/api/v1/files/{made['id']}/content", headers={**bearer(user), "Range": "bytes=-5"})
    assert tail.status == 206 and await tail.read() == text[-5:]
    beyond = await client.get(
        f"/api/v1/files/{made['id']}/content", headers={**bearer(user), "Range": f"bytes={len(text)}-"}
    )
    assert beyond.status == 416


async def test_a_signed_link_works_without_a_token_until_it_expires(client: TestClient) -> None:
    user = await register(client)
    made = await uploaded(client, user, png(), "pic.png")
    resp = await client.post(f"/api/v1/files/{made['id']}/link", json={"expires_in": 2}, headers=bearer(user))
    assert resp.status == 200, await resp.text()
    link = await resp.json()
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(link["url"]) as got:
            assert got.status == 200, await got.text()
            assert Image.open(io.BytesIO(await got.read())).format == "PNG"
        await asyncio.sleep(3.1)
        async with anonymous.get(link["url"]) as late:
            assert late.status in (403, 404), await late.text()  # S3: 403 expired; ours: 404


async def test_another_users_file_is_not_found_anywhere(client: TestClient) -> None:
    owner, other = await register(client), await register(client)
    made = await uploaded(client, owner, png(), "mine.png")
    fid = made["id"]
    for method, path, body in (
        ("GET", f"/api/v1/files/{fid}", None),
        ("GET", f"/api/v1/files/{fid}/content", None),
        ("POST", f"/api/v1/files/{fid}/link", {}),
        ("DELETE", f"/api/v1/files/{fid}", None),
    ):
        resp = await client.request(method, path, json=body, headers=bearer(other))
        assert resp.status == 404, (method, path, await resp.text())
    assert (await (await client.get("/api/v1/files", headers=bearer(other))).json())["items"] == []
    forged = await client.get(f"/api/v1/files/{fid}/shared", params={"expires": str(2**40), "sig": "x" * 43})
    assert forged.status == 404
    assert (await client.get(f"/api/v1/files/{fid}", headers=bearer(owner))).status == 200
    random_id = uuid.uuid4()
    assert (await client.get(f"/api/v1/files/{random_id}", headers=bearer(owner))).status == 404


async def test_listing_pages_and_filters_by_category(client: TestClient) -> None:
    user = await register(client)
    ids = [(await uploaded(client, user, f"note {i}\n".encode(), f"{i}.txt"))["id"] for i in range(3)]
    avatar = await uploaded(client, user, png(), "me.png", category="avatar")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "category": "chat_attachment", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/v1/files", params=params, headers=bearer(user))).json()
        seen.extend(f["id"] for f in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and avatar["id"] not in seen


async def test_the_sweep_removes_unsent_attachments_and_their_bytes(
    client: TestClient, files_settings: Settings
) -> None:
    from handlers.keys import FILES_SERVICE

    user = await register(client)
    sent_later = await uploaded(client, user, b"kept because it was sent\n", "kept.txt")
    unsent = await uploaded(client, user, b"never sent\n", "unsent.txt")
    fresh = await uploaded(client, user, b"uploaded just now\n", "fresh.txt")
    chat = await make_chat(client, user)
    resp = await client.post(
        f"/api/v1/chat/sessions/{chat['id']}/messages",
        json={"client_id": str(uuid.uuid4()), "content": "see attached", "attachments": [sent_later["id"]]},
        headers=bearer(user),
    )
    assert resp.status == 201, await resp.text()
    assert [a["id"] for a in (await resp.json())["attachments"]] == [sent_later["id"]]
    conn = await asyncpg.connect(files_settings.database_url)
    try:
        await conn.execute(
            "UPDATE files SET created_at = now() - interval '2 days' WHERE id = ANY($1::uuid[])",
            [uuid.UUID(sent_later["id"]), uuid.UUID(unsent["id"])],
        )
    finally:
        await conn.close()
    before = await storage_used(client, user)
    summary = await client.server.app[FILES_SERVICE].sweep_orphans(datetime.now(UTC))
    assert summary["unsent_files"] == 1 and summary["blobs"] >= 1
    left = {f["id"] for f in (await (await client.get("/api/v1/files", headers=bearer(user))).json())["items"]}
    assert left == {sent_later["id"], fresh["id"]}
    assert await storage_used(client, user) == before - len(b"never sent\n")
    assert len(await _blob_keys(client, user)) == 2


async def test_uploads_are_rate_limited_per_user(aiohttp_client: Any, files_settings: Settings) -> None:
    limited = await aiohttp_client(
        create_app(make_settings(**{**files_settings.model_dump(), "upload_rate_per_minute": 2}))
    )
    user = await register(limited)
    for i in range(2):
        await uploaded(limited, user, f"note {i}\n".encode(), f"{i}.txt")
    resp = await upload(limited, user, b"one too many\n", "x.txt")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    other = await register(limited)
    await uploaded(limited, other, b"someone else\n", "y.txt")  # the limit is per user


async def test_the_category_may_come_after_the_file(client: TestClient) -> None:
    user = await register(client)
    body = aiohttp.FormData()
    body.add_field("file", b"notes first\n", filename="n.txt", content_type="text/plain")
    body.add_field("category", "knowledge_base")
    resp = await client.post("/api/v1/files/upload", data=body, headers=bearer(user))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["category"] == "knowledge_base"
    missing = aiohttp.FormData()
    missing.add_field("file", b"no category\n", filename="n.txt", content_type="text/plain")
    resp = await client.post("/api/v1/files/upload", data=missing, headers=bearer(user))
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "category"


async def test_a_knowledge_base_file_becomes_knowledge_by_id(client: TestClient) -> None:
    user, other = await register(client), await register(client)
    persona = await (await client.post("/api/v1/personas", json={"name": "Librarian"}, headers=bearer(user))).json()
    text = "The vault opens with the word heliotrope.\n" * 20
    made = await uploaded(client, user, text.encode(), "vault.md", category="knowledge_base")
    path = f"/api/v1/personas/{persona['id']}/knowledge"
    resp = await client.post(path, json={"file_id": made["id"]}, headers=bearer(user))
    assert resp.status == 201, await resp.text()
    entry = await resp.json()
    assert entry["source"] == "file" and entry["filename"] == "vault.md" and entry["content_type"] == "text/markdown"
    detail = await (await client.get(f"{path}/{entry['id']}", headers=bearer(user))).json()
    assert "heliotrope" in detail["content"]
    theirs = await uploaded(client, other, b"not yours\n", "x.txt", category="knowledge_base")
    resp = await client.post(path, json={"file_id": theirs["id"]}, headers=bearer(user))
    assert resp.status == 404 and (await resp.json())["error"]["details"][0]["field"] == "file_id"
    attachment = await uploaded(client, user, b"a chat file\n", "c.txt")
    resp = await client.post(path, json={"file_id": attachment["id"]}, headers=bearer(user))
    assert resp.status == 422
    resp = await client.post(path, json={"file_id": made["id"]}, headers=bearer(other))
    assert resp.status == 404  # not their persona


async def test_a_dead_image_worker_fails_one_upload_and_the_next_gets_a_new_pool(client: TestClient) -> None:
    import os
    import signal

    from handlers.keys import FILES_SERVICE

    user = await register(client)
    await uploaded(client, user, png(), "first.png")  # starts the worker
    pool = client.server.app[FILES_SERVICE]._images
    for pid in list(pool._processes):  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    resp = await upload(client, user, png(), "second.png")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"
    again = await uploaded(client, user, png(), "third.png")
    assert again["content_type"] == "image/png"
    assert (await client.get("/api/v1/auth/me", headers=bearer(user))).status == 200
