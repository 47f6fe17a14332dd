"""Blob stores: where uploaded bytes live. The interface and errors are here; the stores are in
`providers.blobs.local` (a folder under DATA_DIR) and `providers.blobs.s3` (any S3-compatible
service), imported by the composition root that picks one, so the S3 client is loaded only when used."""

from providers.blobs.base import (
    BlobNotFound,
    BlobRangeError,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobStream,
    InvalidBlobKey,
    check_key,
    content_disposition,
)

__all__ = [
    "BlobNotFound",
    "BlobRangeError",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
    "BlobStream",
    "InvalidBlobKey",
    "check_key",
    "content_disposition",
]
