"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, ...) through aiobotocore.

Bodies are streamed: a put keeps at most one part in memory and uses S3's multipart upload once the
body passes `part_size` (a body that never does goes up as one PutObject). A put that fails or is
cancelled aborts its multipart upload so that no parts stay behind (and are not billed)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from providers.blobs.base import (
    PRESIGN_MAX_SECONDS,
    BlobNotFound,
    BlobRangeError,
    BlobStore,
    BlobStoreUnavailable,
    BlobStream,
    check_key,
    check_prefix,
    content_disposition,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = structlog.get_logger(__name__)
MIB = 1024 * 1024
# S3's floor for every part but the last; R2 and MinIO keep the same rule.
MIN_PART_SIZE = 5 * MIB
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    # None: AWS S3 (the endpoint follows the region). MinIO: "http://minio:9000";
    # R2: "https://<account id>.r2.cloudflarestorage.com".
    endpoint_url: str | None = None
    region: str = "us-east-1"  # R2 takes "auto"
    # None: botocore's own lookup (AWS_* variables, shared config, instance or task role).
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    part_size: int = 8 * MIB
    # None: path-style with an endpoint_url (MinIO needs it, R2 takes it), botocore's choice on AWS.
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_connections: int = 20


def _error_code(err: ClientError) -> tuple[str, int | None]:
    return str(err.response.get("Error", {}).get("Code", "")), err.response.get("ResponseMetadata", {}).get(
        "HTTPStatusCode"
    )


@contextlib.contextmanager
def _translated(key: str | None = None) -> Iterator[None]:
    """S3 and transport failures as this provider's errors."""
    try:
        yield
    except ClientError as err:
        code, status = _error_code(err)
        if key is not None and code in ("NoSuchKey", "404", "NotFound"):
            raise BlobNotFound(key) from err
        if code == "InvalidRange" or status == 416:
            raise BlobRangeError(f"range outside the blob {key!r}") from err
        raise BlobStoreUnavailable(f"S3 {code or status}: {err}") from err
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as err:
        raise BlobStoreUnavailable(f"S3 unreachable: {err}") from err


class S3BlobStore:
    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        if settings.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.settings = settings
        self.bucket = settings.bucket
        self._client: S3Client | None = None
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    def _config(self) -> AioConfig:
        style = self.settings.addressing_style or ("path" if self.settings.endpoint_url else "auto")
        return AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": style},
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
            max_pool_connections=self.settings.max_connections,
            retries={"max_attempts": 3, "mode": "standard"},
            # botocore's default CRC32 checksums on every request are not understood by every
            # S3-compatible service; send them only where an operation requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def client(self) -> S3Client:
        """The aiobotocore client, opened on first use (the constructor does no I/O)."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    with _translated():
                        self._client = await self._stack.enter_async_context(
                            get_session().create_client(
                                "s3",
                                endpoint_url=self.settings.endpoint_url,
                                region_name=self.settings.region,
                                aws_access_key_id=self.settings.access_key_id,
                                aws_secret_access_key=self.settings.secret_access_key,
                                config=self._config(),
                            )
                        )
        return self._client

    async def check(self) -> None:
        s3 = await self.client()
        with _translated():
            await s3.head_bucket(Bucket=self.bucket)

    # Writing

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        check_key(key)
        s3 = await self.client()
        part_size = self.settings.part_size
        buffer = bytearray()
        total = 0
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        async def flush_part() -> None:
            nonlocal upload_id
            if upload_id is None:
                with _translated(key):
                    started = await s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
                upload_id = started["UploadId"]
            number = len(parts) + 1
            # The buffer is emptied before the request so that one part is in memory while it goes up.
            body = bytes(buffer)
            buffer.clear()
            with _translated(key):
                done = await s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
            parts.append({"ETag": done["ETag"], "PartNumber": number})

        try:
            async for chunk in chunks:
                buffer += chunk
                total += len(chunk)
                if len(buffer) >= part_size:
                    await flush_part()
            if upload_id is None:
                with _translated(key):
                    await s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(buffer), ContentType=content_type)
                return total
            if buffer:
                await flush_part()
            with _translated(key):
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                await self._abort_to_end(key, upload_id)
            raise
        return total

    async def _abort(self, key: str, upload_id: str) -> None:
        s3 = await self.client()
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError) as err:
            # A bucket lifecycle rule for incomplete multipart uploads is the backstop (docs/uploads.md).
            log.warning("s3_multipart_abort_failed", key=key, upload_id=upload_id, error=str(err))

    async def _abort_to_end(self, key: str, upload_id: str) -> None:
        """Abort even when the put is being cancelled: the shield lets the request finish."""
        await asyncio.shield(asyncio.ensure_future(self._abort(key, upload_id)))

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> int:
        check_key(key)
        s3 = await self.client()
        with _translated(key):
            await s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return len(data)

    # Reading

    async def open(self, key: str, *, start: int | None = None, end: int | None = None) -> BlobStream:
        check_key(key)
        s3 = await self.client()
        ranged = start is not None or end is not None
        if ranged:
            first = 0 if start is None else start
            if first < 0 or (end is not None and end < first):
                raise BlobRangeError(f"range {start}-{end} is not a range")
            wanted = f"bytes={first}-{'' if end is None else end}"
            with _translated(key):
                got = await s3.get_object(Bucket=self.bucket, Key=key, Range=wanted)
        else:
            with _translated(key):
                got = await s3.get_object(Bucket=self.bucket, Key=key)
        body = got["Body"]
        length = got["ContentLength"]
        matched = _CONTENT_RANGE.fullmatch(got.get("ContentRange", "")) if ranged else None
        if matched:
            first, last, size = int(matched[1]), int(matched[2]), int(matched[3])
        elif ranged and first > 0:
            body.close()
            raise BlobStoreUnavailable(f"the S3 service ignored the range asked for {key!r}")
        else:
            first, last, size = 0, length - 1, length

        async def read() -> bytes:
            with _translated(key):
                return await body.read(256 * 1024)

        async def close() -> None:
            # Drops the connection when the body was not read to its end (it cannot be reused).
            body.close()

        return BlobStream(read, close, size=size, start=first, end=last)

    async def get_bytes(self, key: str) -> bytes:
        async with await self.open(key) as stream:
            return await stream.read()

    async def size(self, key: str) -> int:
        check_key(key)
        s3 = await self.client()
        with _translated(key):
            head = await s3.head_object(Bucket=self.bucket, Key=key)
        return head["ContentLength"]

    # Removing, listing, links

    async def delete(self, key: str) -> None:
        check_key(key)
        s3 = await self.client()
        with _translated():
            await s3.delete_object(Bucket=self.bucket, Key=key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        names = [check_key(key) for key in keys]
        s3 = await self.client()
        for at in range(0, len(names), DELETE_BATCH):
            batch = names[at : at + DELETE_BATCH]
            with _translated():
                answer = await s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True}
                )
            failed = [error for error in answer.get("Errors", []) if error.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise BlobStoreUnavailable(
                    f"S3 could not delete {len(failed)} key(s), first {first.get('Key')!r}: {first.get('Code')}"
                )

    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str, inline: bool = False
    ) -> str | None:
        check_key(key)
        if not 1 <= expires_in <= PRESIGN_MAX_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {PRESIGN_MAX_SECONDS} seconds")
        s3 = await self.client()
        with _translated():
            return await s3.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    # S3 answers with these headers instead of the stored ones.
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": content_disposition(filename, inline=inline),
                    "ResponseCacheControl": f"private, max-age={expires_in}",
                },
                ExpiresIn=expires_in,
            )

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        check_prefix(prefix)
        s3 = await self.client()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        with _translated():
            async for page in pages:
                for item in page.get("Contents", []):
                    if "Key" in item:
                        yield item["Key"]

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()


if TYPE_CHECKING:
    # mypy checks here that the store keeps to the interface.
    _keeps_to_the_interface: type[BlobStore] = S3BlobStore
