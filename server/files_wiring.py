"""Wiring of uploads: the blob store (a folder under DATA_DIR, or S3 when S3_BUCKET is set), the process
pool that decodes and re-encodes images beside the event loop, and the files service. One cleanup
context, before the core services (chat attachments, avatars and knowledge use the files service)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor

import structlog
from aiohttp import web

from handlers.keys import FILES_SERVICE, PLANS, POOL
from providers.blobs.base import BlobStore
from providers.blobs.local import LocalBlobStore
from providers.blobs.s3 import S3BlobStore, S3Settings
from server.config import Settings
from server.keys import CONFIG, LIMITER, SECRET
from services.files.images import create_pool
from services.files.links import LinkSigner
from services.files.service import FileSettings, FilesService

log = structlog.get_logger("parlor")
MAX_IMAGE_WORKERS = 4


def blob_store(settings: Settings) -> BlobStore:
    if not settings.s3_bucket:
        return LocalBlobStore(settings.data_dir / "blobs")
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    return S3BlobStore(
        S3Settings(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region or "us-east-1",
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret,
        )
    )


def image_pool(settings: Settings) -> ProcessPoolExecutor:
    """Worker processes for images (services/files/images.py says why processes): IMAGE_WORKERS, or one
    per CPU up to four. Started on the first image, not here."""
    return create_pool(settings.image_workers or min(MAX_IMAGE_WORKERS, os.cpu_count() or 1))


async def files_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG]
    blobs = blob_store(settings)
    await blobs.check()
    log.info("blob store ready", store=blobs.name)
    app[FILES_SERVICE] = FilesService(
        pool=app[POOL],
        blobs=blobs,
        plans=app[PLANS],
        limiter=app[LIMITER],
        signer=LinkSigner(app[SECRET]),
        images=lambda: image_pool(settings),
        settings=FileSettings(
            upload_max_bytes=settings.upload_max_bytes,
            image_max_side=settings.image_max_side,
            image_max_pixels=settings.image_max_pixels,
            upload_rate_per_minute=settings.upload_rate_per_minute,
        ),
    )
    yield
    app[FILES_SERVICE].close()
    await blobs.aclose()
