"""SHA-256 digests of bytes and of streams, as lowercase hex strings.

``DigestingStream`` hashes chunks as they pass through an upload pipeline, so the
digest of a multi-gigabyte object costs no second pass over the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

BytesLike = bytes | bytearray | memoryview

SHA256_HEX_LENGTH = 64
_READ_SIZE = 1024 * 1024


def sha256_hex(data: BytesLike) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def sha256_hex_chunks(chunks: Iterable[BytesLike]) -> str:
    """Return the SHA-256 of the concatenation of ``chunks`` (consumed once)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_hex_file(handle: BinaryIO, read_size: int = _READ_SIZE) -> str:
    """Return the SHA-256 of everything left to read in a binary file object."""
    digest = hashlib.sha256()
    while chunk := handle.read(read_size):
        digest.update(chunk)
    return digest.hexdigest()


class DigestingStream(Iterator[bytes]):
    """Pass chunks through unchanged while hashing them and counting their bytes.

    Read ``hexdigest()`` and ``size`` only after the stream is exhausted; before that
    they describe the bytes seen so far.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._source = iter(chunks)
        self._digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> DigestingStream:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._source)
        self._digest.update(chunk)
        self.size += len(chunk)
        return chunk

    def hexdigest(self) -> str:
        """Return the SHA-256 of the bytes that have passed through so far."""
        return self._digest.hexdigest()
