"""The one blob-store interface, key validation and the shared chunk reader.

A blob store keeps opaque byte strings under opaque relative keys such as
``objects/ab/cd/3f2c….bin``. Every backend (``filesystem``, ``s3``, ``memory``) has the
same semantics, checked by one contract suite (``tests/contract/test_blobstore.py``):

* a key is 1-1024 characters of lowercase ASCII letters, digits, ``.``, ``_``, ``-``
  in ``/``-separated segments; no segment is empty or starts with ``.`` (so ``.``,
  ``..`` and hidden names are impossible). Lowercase only, because a case-insensitive
  file system would otherwise merge keys that S3 keeps apart. A bad key raises
  ``InvalidRequest``; the backend is never touched.
* ``put``/``put_stream`` replace the whole blob atomically: a reader sees the old or the
  new content, never a mix, and a failed write leaves the old content (or nothing).
* reading a missing key raises ``BlobNotFound``; ``delete`` of a missing key is a no-op.
* ``get`` and ``iter_chunks`` read the whole blob or, with ``offset`` and ``length``, the
  bytes from ``offset`` on (at most ``length`` of them): several objects can share one
  blob (ingest writes a job's objects as one). A range that runs past the end yields what
  there is, and nothing from an offset at or past the end, as an HTTP range read does; the
  caller checks the length it expected (a short read fails the object's authentication
  tag anyway). A negative offset or length raises ``InvalidRequest``.
* ``list(prefix)`` yields the keys that start with ``prefix`` (a plain string prefix,
  as in S3), in ascending order.
* any other backend failure raises ``StorageError`` whose message names the operation
  and the key, never the content.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Protocol, runtime_checkable

from irmsia.errors import InvalidRequest

BytesLike = bytes | bytearray | memoryview
"""What ``put`` accepts: anything exposing a contiguous byte buffer."""

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""Default read size of ``iter_chunks``: big enough for throughput, small enough to stream."""

MAX_KEY_LENGTH = 1024
_SEGMENT = r"[a-z0-9_-][a-z0-9._-]*"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


def is_valid_key(key: str) -> bool:
    """Return whether ``key`` is an acceptable blob key (see the module docstring)."""
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH and _KEY_RE.fullmatch(key) is not None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged, or raise ``InvalidRequest`` if it is not a valid blob key.

    The message does not echo the key: a rejected key may be attacker-chosen text.
    """
    if not is_valid_key(key):
        raise InvalidRequest(
            "invalid blob key: use lowercase letters, digits, '.', '_', '-' in '/'-separated "
            "segments that do not start with '.'"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it can start a valid key, else raise ``InvalidRequest``.

    ``""`` (everything), a whole directory (``objects/``) and a partial segment
    (``objects/a``) are all accepted.
    """
    if prefix == "":
        return prefix
    stem = prefix[:-1] if prefix.endswith("/") else prefix
    if not is_valid_key(stem):
        raise InvalidRequest("invalid blob key prefix")
    return prefix


class BlobReader(Iterator[bytes]):
    """Iterate a blob's content in chunks of at most ``chunk_size`` bytes.

    Wraps a backend's ``read(n)``/``close()`` pair. The source is closed when the
    content is exhausted, on ``close()``, when leaving a ``with`` block, or when the
    reader is garbage-collected, so an abandoned download does not leak a file handle
    or a connection.
    """

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None], chunk_size: int) -> None:
        self._read: Callable[[int], bytes] | None = read
        self._close = close
        self._chunk_size = chunk_size
        if chunk_size <= 0:
            self.close()
            raise InvalidRequest("chunk size must be positive")

    def __iter__(self) -> BlobReader:
        return self

    def __next__(self) -> bytes:
        if self._read is None:
            raise StopIteration
        chunk = self._read(self._chunk_size)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Release the underlying file or connection; safe to call more than once."""
        if self._read is not None:
            self._read = None
            self._close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Closing explicitly here avoids a ResourceWarning from the file object's own
        # finaliser when a caller drops the reader half-way.
        self.close()


def check_range(offset: int, length: int | None) -> None:
    """Raise ``InvalidRequest`` for a negative range offset or length."""
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRequest("a blob range needs a non-negative offset and length")


def bounded(read: Callable[[int], bytes], length: int | None) -> Callable[[int], bytes]:
    """``read`` limited to ``length`` bytes in all (unlimited for ``None``)."""
    if length is None:
        return read
    remaining = length

    def limited(size: int) -> bytes:
        nonlocal remaining
        if remaining <= 0:
            return b""
        data = read(min(size, remaining))
        remaining -= len(data)
        return data

    return limited


@runtime_checkable
class BlobStore(Protocol):
    """Where encrypted objects live. See the module docstring for the shared semantics."""

    def put(self, key: str, data: BytesLike) -> None:
        """Store ``data`` under ``key``, replacing any previous blob atomically."""
        ...

    def put_stream(self, key: str, chunks: Iterable[BytesLike]) -> int:
        """Store the concatenation of ``chunks`` under ``key`` atomically; return its size.

        The chunks are consumed once and never all held in memory. If the iterable
        raises, the exception propagates and ``key`` keeps its previous content.
        """
        ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Return the blob, or the range ``offset`` … ``offset + length``. Raises ``BlobNotFound``."""
        ...

    def iter_chunks(
        self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE, *, offset: int = 0, length: int | None = None
    ) -> BlobReader:
        """Open the blob (or a range of it) for streaming; raises ``BlobNotFound`` now, not at
        the first chunk."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether a blob is stored under ``key``."""
        ...

    def size(self, key: str) -> int:
        """Return the blob's size in bytes. Raises ``BlobNotFound``."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield, in ascending order, every key that starts with ``prefix``."""
        ...

    def check_writable(self) -> None:
        """Write and remove a probe blob; raise ``StorageError`` if that fails (readiness)."""
        ...
