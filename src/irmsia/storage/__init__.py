"""Blob storage: one ``BlobStore`` interface and a lazy registry of backends.

Backends are named by import path and imported only when ``create_blob_store`` asks
for them, so an optional library that is not installed (boto3 for ``s3``) never breaks
``import irmsia``; asking for that backend raises ``ConfigError`` saying what to install.

    store = create_blob_store("filesystem", root=settings.storage_path)
    store = create_blob_store("s3", bucket="irmsia", endpoint_url="http://minio:9000")
"""

from __future__ import annotations

import importlib
from typing import Any

from irmsia.errors import ConfigError
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
    target = BACKENDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown blob store {kind!r}; choose one of {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"blob store {kind!r} is not installed ({exc.name or 'a dependency'} missing)"
        ) from exc
    store: BlobStore = getattr(module, class_name)(**params)
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
