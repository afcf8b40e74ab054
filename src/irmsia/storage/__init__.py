"""Blob storage: one ``BlobStore`` interface and a lazy registry of backends.

Backends are named by import path and imported only when ``create_blob_store`` asks
for them, so an optional library that is not installed (boto3 for ``s3``) never breaks
``import irmsia``; asking for that backend raises ``ConfigError`` saying what to install.

    store = create_blob_store("filesystem", root=settings.storage_path)
    store = create_blob_store("s3", bucket="irmsia", endpoint_url="http://minio:9000")
"""

from __future__ import annotations

from typing import Any

from irmsia.plugins import load_plugin
from irmsia.storage.base import (
    DEFAULT_CHUNK_SIZE,
    BlobReader,
    BlobStore,
    BytesLike,
    is_valid_key,
    validate_key,
    validate_prefix,
)

BACKENDS: dict[str, str] = {
    "memory": "irmsia.storage.memory:MemoryBlobStore",
    "filesystem": "irmsia.storage.filesystem:FilesystemBlobStore",
    "s3": "irmsia.storage.s3:S3BlobStore",
}
"""Blob store kind → ``module:Class``. Constant on purpose: no global registration."""


def create_blob_store(kind: str, **params: Any) -> BlobStore:
    """Build the ``kind`` blob store with ``params`` passed to its constructor.

    Raises ``ConfigError`` for an unknown kind or a backend whose library is missing.
    """
    store: BlobStore = load_plugin(BACKENDS, kind, "blob store")(**params)
    return store


__all__ = [
    "BACKENDS",
    "DEFAULT_CHUNK_SIZE",
    "BlobReader",
    "BlobStore",
    "BytesLike",
    "create_blob_store",
    "is_valid_key",
    "validate_key",
    "validate_prefix",
]
