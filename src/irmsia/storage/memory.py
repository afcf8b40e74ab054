"""In-memory blob store: the test fake, with the same semantics as the real backends."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator

from irmsia.errors import BlobNotFound
from irmsia.storage.base import (
    DEFAULT_CHUNK_SIZE,
    BlobReader,
    BytesLike,
    check_range,
    validate_key,
    validate_prefix,
)


class MemoryBlobStore:
    """Keep blobs in a dict; thread-safe; everything is lost with the object."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: BytesLike) -> None:
        """Store a copy of ``data`` under ``key``."""
        validate_key(key)
        blob = bytes(data)
        with self._lock:
            self._blobs[key] = blob

    def put_stream(self, key: str, chunks: Iterable[BytesLike]) -> int:
        """Store the concatenated chunks; nothing changes if the iterable raises."""
        validate_key(key)
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
        blob = bytes(buffer)
        with self._lock:
            self._blobs[key] = blob
        return len(blob)

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Return the blob or a range of it. Raises ``BlobNotFound``."""
        check_range(offset, length)
        blob = self._lookup(key)
        if offset == 0 and length is None:
            return blob
        return blob[offset:] if length is None else blob[offset : offset + length]

    def iter_chunks(
        self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE, *, offset: int = 0, length: int | None = None
    ) -> BlobReader:
        """Stream the blob (or a range of it) as it was when this call was made."""
        stream = io.BytesIO(self.get(key, offset=offset, length=length))
        return BlobReader(stream.read, stream.close, chunk_size)

    def delete(self, key: str) -> None:
        """Remove the blob if present."""
        validate_key(key)
        with self._lock:
            self._blobs.pop(key, None)

    def exists(self, key: str) -> bool:
        """Return whether ``key`` holds a blob."""
        validate_key(key)
        with self._lock:
            return key in self._blobs

    def size(self, key: str) -> int:
        """Return the blob's size. Raises ``BlobNotFound``."""
        return len(self._lookup(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield matching keys in ascending order (a snapshot taken at the call)."""
        validate_prefix(prefix)
        with self._lock:
            keys = sorted(key for key in self._blobs if key.startswith(prefix))
        return iter(keys)

    def check_writable(self) -> None:
        """Always writable."""

    def _lookup(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            blob = self._blobs.get(key)
        if blob is None:
            raise BlobNotFound(f"no blob under key {key}")
        return blob
