"""The blob stores, all through the same tests: the local folder and S3 (moto's S3 server on 127.0.0.1,
tests/fakes/s3.py). What is checked behind a store's back (temp files, pending multipart uploads)
is read from the folder or from the S3 server directly."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.blobs import (
    BlobNotFound,
    BlobRangeError,
    BlobStore,
    BlobStoreUnavailable,
    InvalidBlobKey,
    content_disposition,
)
from providers.blobs.local import LocalBlobStore
from providers.blobs.s3 import S3BlobStore, S3Settings
from tests.helpers import free_port

MIB = 1024 * 1024
CHUNK = 64 * 1024


class CutOff(Exception):
    """What an upload handler raises when a body passes its size limit."""


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    made: BlobStore
    if request.param == "local":
        made = LocalBlobStore(tmp_path / "blobs")
    else:
        made = S3BlobStore(request.getfixturevalue("s3_server").settings())
    await made.check()
    yield made
    await made.aclose()


def files_under(store: BlobStore) -> list[str]:
    """Every file of a local store, hidden temp files included."""
    assert isinstance(store, LocalBlobStore)
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def s3_view(store: BlobStore) -> tuple[list[str], list[str]]:
    """(object keys, keys of pending multipart uploads) in a store's bucket, read from the server."""
    assert isinstance(store, S3BlobStore)
    client = boto_client(store)
    objects = client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [o["Key"] for o in objects], [u["Key"] for u in uploads]


@functools.cache
def _boto_client(settings: S3Settings) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
    )


def boto_client(store: S3BlobStore) -> Any:
    """A plain boto3 client on the store's bucket, to look behind its back."""
    return _boto_client(replace(store.settings, bucket=""))


def assert_nothing_stored(store: BlobStore) -> None:
    if isinstance(store, LocalBlobStore):
        assert files_under(store) == []
    else:
        assert s3_view(store) == ([], [])


def pattern(size: int) -> bytes:
    """Bytes that differ at every offset that matters (a wrong range or part order shows)."""
    block = hashlib.sha256(b"parlor").digest() * (CHUNK // 32)
    counted = b"".join(block[:-4] + n.to_bytes(4, "big") for n in range(size // CHUNK + 1))
    return counted[:size]


async def chunked(data: bytes, size: int = CHUNK, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        if fail_after is not None and at >= fail_after:
            raise CutOff("too large")
        yield data[at : at + size]
        await asyncio.sleep(0)
    if fail_after is not None:
        raise CutOff("too large")


async def test_round_trip(store: BlobStore) -> None:
    data = b"hello, blobs\x00\xff" * 100
    assert await store.put_bytes("files/a1/original", data, content_type="image/png") == len(data)
    assert await store.get_bytes("files/a1/original") == data
    assert await store.size("files/a1/original") == len(data)
    async with await store.open("files/a1/original") as stream:
        assert (stream.size, stream.start, stream.end, stream.length) == (len(data), 0, len(data) - 1, len(data))
        assert await stream.read() == data

    # A second put replaces the first; an empty blob is a blob.
    await store.put_bytes("files/a1/original", b"v2", content_type="image/png")
    assert await store.get_bytes("files/a1/original") == b"v2"
    await store.put_bytes("empty", b"", content_type="text/plain")
    assert await store.size("empty") == 0
    assert await store.get_bytes("empty") == b""

    if isinstance(store, S3BlobStore):
        head = boto_client(store).head_object(Bucket=store.bucket, Key="files/a1/original")
        assert head["ContentType"] == "image/png"
    else:
        assert store.path("files/a1/original").read_bytes() == b"v2"
        assert [p for p in files_under(store) if p.startswith(".") or "/." in p] == []


async def test_streamed_put_of_12_mib(store: BlobStore) -> None:
    data = pattern(12 * MIB)
    written = await store.put("big", chunked(data), content_type="application/octet-stream")
    assert written == len(data)
    assert await store.size("big") == len(data)
    got = hashlib.sha256()
    async with await store.open("big") as stream:
        async for chunk in stream:
            got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    if isinstance(store, S3BlobStore):
        # A multipart object's ETag ends in -<parts>: 8 MiB + 4 MiB.
        etag = boto_client(store).head_object(Bucket=store.bucket, Key="big")["ETag"]
        assert etag.strip('"').endswith("-2")
        assert s3_view(store) == (["big"], [])


async def test_small_streamed_put_is_one_object(store: BlobStore) -> None:
    data = pattern(300_000)
    assert await store.put("small", chunked(data), content_type="text/plain") == len(data)
    assert await store.get_bytes("small") == data
    if isinstance(store, S3BlobStore):
        etag = boto_client(store).head_object(Bucket=store.bucket, Key="small")["ETag"]
        assert "-" not in etag


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 99, (0, 99)),  # both ends included, as in `Range: bytes=0-99`
        (100, None, (100, 9_999)),
        (None, 49, (0, 49)),
        (9_990, 99_999, (9_990, 9_999)),  # an end past the blob is cut to its last byte
        (5_000, 5_000, (5_000, 5_000)),
    ],
)
async def test_range_reads(store: BlobStore, start: int | None, end: int | None, expected: tuple[int, int]) -> None:
    data = pattern(10_000)
    await store.put_bytes("ranged", data, content_type="application/octet-stream")
    async with await store.open("ranged", start=start, end=end) as stream:
        assert (stream.start, stream.end, stream.size) == (*expected, 10_000)
        assert stream.length == expected[1] - expected[0] + 1
        assert await stream.read() == data[expected[0] : expected[1] + 1]


async def test_unsatisfiable_ranges(store: BlobStore) -> None:
    await store.put_bytes("ranged", pattern(1000), content_type="application/octet-stream")
    for start, end in [(1000, None), (5000, 6000), (10, 9), (20, 10), (-1, 5)]:
        with pytest.raises(BlobRangeError):
            await store.open("ranged", start=start, end=end)
    await store.put_bytes("empty", b"", content_type="text/plain")
    async with await store.open("empty") as stream:
        assert (stream.size, stream.length) == (0, 0)
        assert await stream.read() == b""
    with pytest.raises(BlobRangeError):
        await store.open("empty", start=0)


async def test_read_can_stop_early(store: BlobStore) -> None:
    await store.put_bytes("partial", pattern(3 * MIB), content_type="application/octet-stream")
    stream = await store.open("partial")
    first = await stream.__anext__()
    assert first == pattern(len(first))
    await stream.aclose()
    await stream.aclose()  # twice is fine
    assert [chunk async for chunk in stream] == []


@pytest.mark.parametrize("fail_after", [0, 100_000, 9 * MIB], ids=["at-once", "small", "past-a-part"])
async def test_put_whose_iterator_raises_leaves_nothing(store: BlobStore, fail_after: int) -> None:
    with pytest.raises(CutOff):
        await store.put("cut", chunked(pattern(12 * MIB), fail_after=fail_after), content_type="image/jpeg")
    with pytest.raises(BlobNotFound):
        await store.size("cut")
    assert [key async for key in store.keys()] == []
    assert_nothing_stored(store)


async def test_failed_put_keeps_the_blob_already_there(store: BlobStore) -> None:
    await store.put_bytes("kept", b"old", content_type="text/plain")
    with pytest.raises(CutOff):
        await store.put("kept", chunked(pattern(6 * MIB), fail_after=5 * MIB + 1), content_type="text/plain")
    assert await store.get_bytes("kept") == b"old"
    if isinstance(store, S3BlobStore):
        assert s3_view(store) == (["kept"], [])
    else:
        assert files_under(store) == [str(store.path("kept").relative_to(store.root))]


async def test_cancelled_put_leaves_nothing(store: BlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        data = pattern(9 * MIB)  # S3: past the first part, so a multipart upload is under way
        for at in range(0, len(data), CHUNK):
            yield data[at : at + CHUNK]
        started.set()
        await asyncio.sleep(60)  # the client stalls; the server gives up on it
        yield b"never"

    task = asyncio.create_task(store.put("stalled", slow(), content_type="text/plain"))
    await asyncio.wait_for(started.wait(), 30)
    if isinstance(store, S3BlobStore):
        assert s3_view(store) == ([], ["stalled"])  # a multipart upload under way, one part sent
    else:
        [temp] = files_under(store)
        assert temp.split("/")[1].startswith(".")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_stored(store)


async def test_unusable_store(tmp_path: Path, s3_server: Any) -> None:
    (tmp_path / "not-a-folder").write_bytes(b"")
    dead = S3BlobStore(S3Settings(bucket="b", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=1))
    no_bucket = S3BlobStore(s3_server.settings(bucket="no-such-bucket"))
    for store in (LocalBlobStore(tmp_path / "not-a-folder"), dead, no_bucket):
        with pytest.raises(BlobStoreUnavailable):
            await store.check()
        with pytest.raises(BlobStoreUnavailable):
            await store.put_bytes("k", b"x", content_type="text/plain")
        await store.aclose()


async def test_delete_is_idempotent(store: BlobStore) -> None:
    for key in ("d/1", "d/2", "d/3"):
        await store.put_bytes(key, key.encode(), content_type="text/plain")
    await store.delete("d/1")
    await store.delete("d/1")
    await store.delete("never-was")
    with pytest.raises(BlobNotFound):
        await store.get_bytes("d/1")
    await store.delete_many(["d/2", "d/3", "never-was", "d/2"])
    await store.delete_many([])
    assert [key async for key in store.keys()] == []
    assert_nothing_stored(store)


async def test_missing_key(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.open("files/missing")
    with pytest.raises(BlobNotFound):
        await store.open("files/missing", start=0, end=10)
    with pytest.raises(BlobNotFound):
        await store.size("files/missing")
    with pytest.raises(BlobNotFound):
        await store.get_bytes("files/missing")


async def test_keys_by_prefix(store: BlobStore) -> None:
    for key in ("a/1", "a/2", "a/sub/3", "ab", "b/1"):
        await store.put_bytes(key, b"x", content_type="text/plain")
    assert {key async for key in store.keys("a/")} == {"a/1", "a/2", "a/sub/3"}
    assert {key async for key in store.keys("a")} == {"a/1", "a/2", "a/sub/3", "ab"}
    assert {key async for key in store.keys()} == {"a/1", "a/2", "a/sub/3", "ab", "b/1"}
    assert [key async for key in store.keys("c")] == []
    for bad in ("/", "../", "a//", ".x"):
        with pytest.raises(InvalidBlobKey):
            [key async for key in store.keys(bad)]


async def test_invalid_keys_are_refused(store: BlobStore) -> None:
    for key in ("", "/abs", "a//b", "../up", "a/../b", ".hidden", "a/.tmp", "sp ace", "ti~lde", "é", "x" * 201):
        with pytest.raises(InvalidBlobKey):
            await store.put_bytes(key, b"x", content_type="text/plain")
        with pytest.raises(InvalidBlobKey):
            await store.size(key)
    assert_nothing_stored(store)


async def test_presigned_url(store: BlobStore) -> None:
    data = pattern(200_000)
    await store.put_bytes("files/p1/original", data, content_type="application/octet-stream")
    url = await store.presigned_url(
        "files/p1/original", expires_in=60, filename="Grüße «1».png", content_type="image/png", inline=True
    )
    if url is None:
        assert store.name == "local"  # the files service signs its own links for local blobs
        return
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:  # no credentials: the URL is the key
            assert resp.status == 200, await resp.text()
            assert await resp.read() == data
            assert resp.headers["Content-Type"] == "image/png"
            assert resp.headers["Content-Disposition"] == content_disposition("Grüße «1».png", inline=True)
        async with http.get(url.replace("files/p1/original", "files/p1/other")) as resp:
            assert resp.status == 403  # the signature covers the key

        # Signing times have whole seconds: start just after one, so a 1 s link is good for ~1 s.
        await asyncio.sleep(1.02 - time.time() % 1)
        short = await store.presigned_url(
            "files/p1/original", expires_in=1, filename="a.bin", content_type="application/octet-stream"
        )
        assert short is not None
        async with http.get(short) as resp:
            assert resp.status == 200
        await asyncio.sleep(2)
        async with http.get(short) as resp:
            assert resp.status == 403
            assert "expired" in await resp.text()


def test_content_disposition() -> None:
    assert content_disposition("notes.txt") == 'attachment; filename="notes.txt"'
    assert content_disposition("a.png", inline=True) == 'inline; filename="a.png"'
    assert content_disposition('we"ird\\.txt') == (
        "attachment; filename=\"we_ird_.txt\"; filename*=UTF-8''we%22ird%5C.txt"
    )
    assert content_disposition("é.pdf") == "attachment; filename=\"_.pdf\"; filename*=UTF-8''%C3%A9.pdf"


async def test_local_layout_and_stale_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.put_bytes("files/x/thumb", b"t", content_type="image/webp")
    path = store.path("files/x/thumb")
    assert path.parent.parent == store.root
    assert len(path.parent.name) == 2
    assert path.name == "files~x~thumb"
    # A crash mid-write leaves a hidden temp file: never listed, removed once old.
    crashed = path.parent / ".files~x~other.abc123.tmp"
    crashed.write_bytes(b"half")
    fresh = path.parent / ".files~x~more.def456.tmp"
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(crashed, (old, old))
    assert [key async for key in store.keys()] == ["files/x/thumb"]
    assert await store.remove_stale_temps(older_than=3600) == 1
    assert not crashed.exists()
    assert fresh.exists()
