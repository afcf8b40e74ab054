"""Envelope encryption of stored objects: AES-256-GCM under a fresh data key per object.

For every object a new random 256-bit data key (DEK) encrypts the content; a
``KeyProvider`` wraps the DEK under its current key-encryption key (KEK). The wrapped
DEK (``WrappedKey``: KEK id + ciphertext) is kept OUTSIDE the blob, in the database row
of the object, so that

* ``irmsia keys rotate`` re-wraps DEKs under a new KEK (``EnvelopeCipher.rewrap``)
  without reading or rewriting any blob, and
* deleting the wrapped DEKs of a study makes its blobs permanently unreadable, even in
  backups of the blob store (crypto-shredding).

Blob formats (all integers big-endian)::

    one-shot (``encrypt``), for objects held in memory:
      offset  size  field
      0       4     magic  b"IRME"
      4       1     format version = 1
      5       1     mode = 1
      6       12    nonce (random)
      18      n+16  AES-256-GCM ciphertext || tag

    chunked (``encrypt_stream``), for objects too large for memory:
      0       4     magic  b"IRME"
      4       1     format version = 1
      5       1     mode = 2
      6       4     plaintext chunk size c (1 … 64 MiB)
      10      7     nonce prefix (random)
      17      …     chunks: every chunk but the last holds exactly c plaintext bytes
                    (c + 16 ciphertext bytes); the last holds 0 … c bytes.
      chunk i's nonce = prefix (7) || i as uint32 (4) || 0x01 if last else 0x00 (1)

The associated data of every AES-GCM call is
``b"irmsia/envelope\\x00" || uint16 len(object_id) || object_id (UTF-8) || header``
where header is every byte before the first ciphertext byte. It binds the format
version, mode, chunk size and nonce, and the object id, so a blob moved to another
object, a downgraded header, a truncated stream (the last chunk must carry the final
flag), reordered or dropped chunks, a wrong DEK or a flipped bit all raise
``IntegrityError``: decryption never returns unauthenticated bytes.

The KEK id is deliberately NOT in the blob's associated data: rotation changes it
without rewriting the blob. It is bound where it matters, in the wrapping of the DEK
(see ``irmsia.crypto.keys``): a wrapped key relabelled with another KEK id fails there,
and a wrapped key belonging to another object yields a different DEK, which fails here.

A fresh DEK per object means a random 96-bit nonce can never repeat under one key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from irmsia.crypto.keys import KEY_BYTES, KeyProvider, WrappedKey
from irmsia.errors import IntegrityError, InvalidRequest

BytesLike = bytes | bytearray | memoryview

MAGIC = b"IRME"
FORMAT_VERSION = 1
MODE_ONE_SHOT = 1
MODE_CHUNKED = 2
TAG_BYTES = 16
NONCE_BYTES = 12
NONCE_PREFIX_BYTES = 7
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_OBJECT_ID_BYTES = 1024
_PREAMBLE = struct.Struct(">4sBB")  # magic, version, mode
_ONE_SHOT_HEADER = struct.Struct(">4sBB12s")  # + nonce
_CHUNKED_HEADER = struct.Struct(">4sBBI7s")  # + chunk size, nonce prefix
ONE_SHOT_HEADER_SIZE = _ONE_SHOT_HEADER.size  # 18
CHUNKED_HEADER_SIZE = _CHUNKED_HEADER.size  # 17
_AAD_DOMAIN = b"irmsia/envelope\x00"
_MAX_CHUNKS = 2**32
# ``encrypt_into`` (recent cryptography releases) writes the ciphertext straight into the
# blob after its header; without it the ciphertext is made first and copied once.
_HAS_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into")


def blob_size(plaintext_size: int, chunk_size: int | None = None) -> int:
    """Return the size of the blob for ``plaintext_size`` bytes of content.

    ``chunk_size`` None means the one-shot format (``encrypt``); otherwise the chunked
    format (``encrypt_stream``) with that plaintext chunk size.
    """
    if chunk_size is None:
        return ONE_SHOT_HEADER_SIZE + plaintext_size + TAG_BYTES
    chunks = max(1, -(-plaintext_size // chunk_size))
    return CHUNKED_HEADER_SIZE + plaintext_size + chunks * TAG_BYTES


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encrypted object: the blob to store and the wrapped DEK to keep in the database.

    ``blob`` is a ``bytearray`` so encryption writes it in one pass with no extra copy;
    blob stores and hashing accept it as any bytes-like object.
    """

    blob: bytearray
    wrapped_key: WrappedKey

    def __repr__(self) -> str:
        return f"Sealed(blob=<{len(self.blob)} bytes>, wrapped_key={self.wrapped_key!r})"


@dataclass(frozen=True, slots=True)
class SealedStream:
    """A streaming encryption: the wrapped DEK (known at once) and the lazy blob chunks.

    Persist ``wrapped_key`` only after every chunk of ``chunks`` has been stored.
    """

    wrapped_key: WrappedKey
    chunks: Iterator[bytes]


class EnvelopeCipher:
    """Encrypt and decrypt objects with per-object data keys wrapped by ``key_provider``.

    Stateless apart from the provider; safe to share between threads.
    ``chunk_size`` is the plaintext size of each chunk written by ``encrypt_stream``.
    """

    def __init__(self, key_provider: KeyProvider, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidRequest("envelope chunk size must be between 1 byte and 64 MiB")
        self._keys = key_provider
        self._chunk_size = chunk_size

    def encrypt(self, object_id: str, plaintext: BytesLike) -> Sealed:
        """Encrypt a whole object under a new DEK (one-shot format)."""
        object_id_bytes = _object_id_bytes(object_id)
        dek = AESGCM.generate_key(bit_length=256)
        wrapped = self._keys.wrap(dek)
        nonce = os.urandom(NONCE_BYTES)
        header = _ONE_SHOT_HEADER.pack(MAGIC, FORMAT_VERSION, MODE_ONE_SHOT, nonce)
        blob = bytearray(len(header) + len(plaintext) + TAG_BYTES)
        blob[: len(header)] = header
        aes, aad = AESGCM(dek), _aad(object_id_bytes, header)
        with memoryview(blob) as view, view[len(header) :] as body:
            if _HAS_ENCRYPT_INTO:
                aes.encrypt_into(nonce, plaintext, aad, body)
            else:
                body[:] = aes.encrypt(nonce, plaintext, aad)
        return Sealed(blob, wrapped)

    def decrypt(self, object_id: str, blob: BytesLike, wrapped_key: WrappedKey) -> bytes:
        """Return the plaintext of a blob in either format.

        Raises ``IntegrityError`` if anything does not authenticate, ``UnknownKey`` if
        the provider lacks the KEK, ``ExternalServiceError`` if a remote provider fails.
        """
        object_id_bytes = _object_id_bytes(object_id)
        aes = AESGCM(self._unwrap(wrapped_key))
        with memoryview(blob) as view:
            mode = _read_preamble(view)
            if mode == MODE_ONE_SHOT:
                return _open_one_shot(aes, object_id, object_id_bytes, view)
            header, chunk_size, prefix = _read_chunked_header(view)
            opener = _ChunkOpener(aes, object_id, _aad(object_id_bytes, header), prefix)
            step = chunk_size + TAG_BYTES
            pieces: list[bytes] = []
            pos = len(header)
            while len(view) - pos > step:
                pieces.append(opener.open(view[pos : pos + step], final=False))
                pos += step
            pieces.append(opener.open(view[pos:], final=True))
            return b"".join(pieces)

    def encrypt_stream(self, object_id: str, chunks: Iterable[BytesLike]) -> SealedStream:
        """Encrypt an object of any size from an iterable of plaintext pieces (chunked format).

        The DEK is created and wrapped now; the returned ``chunks`` iterator encrypts
        lazily, holding about one chunk of plaintext at a time. Input pieces may have any
        sizes; output pieces are the header, then one piece per chunk.
        """
        object_id_bytes = _object_id_bytes(object_id)
        dek = AESGCM.generate_key(bit_length=256)
        wrapped = self._keys.wrap(dek)
        prefix = os.urandom(NONCE_PREFIX_BYTES)
        header = _CHUNKED_HEADER.pack(MAGIC, FORMAT_VERSION, MODE_CHUNKED, self._chunk_size, prefix)
        sealer = _ChunkSealer(AESGCM(dek), _aad(object_id_bytes, header), prefix)
        return SealedStream(wrapped, _seal_stream(sealer, header, chunks, self._chunk_size))

    def decrypt_stream(
        self, object_id: str, chunks: Iterable[BytesLike], wrapped_key: WrappedKey
    ) -> Iterator[bytes]:
        """Decrypt a blob (either format) given as an iterable of pieces of any sizes.

        The DEK is unwrapped now (``UnknownKey``/``IntegrityError`` raise at the call).
        Each plaintext chunk is yielded only after its tag verified, but truncation of
        the whole stream is detected only at its end: a consumer that forwards chunks
        as they come (an HTTP response) must treat an ``IntegrityError`` raised during
        iteration as a failed transfer. A one-shot blob is buffered whole before release.
        """
        object_id_bytes = _object_id_bytes(object_id)
        aes = AESGCM(self._unwrap(wrapped_key))
        return _open_stream(aes, object_id, object_id_bytes, chunks)

    def rewrap(self, wrapped_key: WrappedKey) -> WrappedKey:
        """Return the same DEK wrapped under the provider's current KEK; the blob is unchanged."""
        return self._keys.rewrap(wrapped_key)

    def _unwrap(self, wrapped_key: WrappedKey) -> bytes:
        dek = self._keys.unwrap(wrapped_key)
        if len(dek) != KEY_BYTES:
            raise IntegrityError("unwrapped data key has the wrong length: corrupted wrapped key")
        return dek


class _ChunkSealer:
    """Encrypts consecutive chunks with counter nonces; refuses to go past the last one."""

    def __init__(self, aes: AESGCM, aad: bytes, prefix: bytes) -> None:
        self._aes = aes
        self._aad = aad
        self._prefix = prefix
        self._counter = 0

    def seal(self, plaintext: BytesLike, final: bool) -> bytes:
        if self._counter >= _MAX_CHUNKS:
            raise InvalidRequest("object too large for the chunked envelope format")
        nonce = _chunk_nonce(self._prefix, self._counter, final)
        self._counter += 1
        return self._aes.encrypt(nonce, plaintext, self._aad)


class _ChunkOpener:
    """Decrypts consecutive chunks, checking position and the final flag via the nonce."""

    def __init__(self, aes: AESGCM, object_id: str, aad: bytes, prefix: bytes) -> None:
        self._aes = aes
        self._object_id = object_id
        self._aad = aad
        self._prefix = prefix
        self._counter = 0

    def open(self, ciphertext: BytesLike, final: bool) -> bytes:
        if len(ciphertext) < TAG_BYTES or self._counter >= _MAX_CHUNKS:
            raise IntegrityError(_failure(self._object_id, "truncated"))
        nonce = _chunk_nonce(self._prefix, self._counter, final)
        self._counter += 1
        try:
            return self._aes.decrypt(nonce, ciphertext, self._aad)
        except InvalidTag:
            raise IntegrityError(_failure(self._object_id, "does not authenticate")) from None


def _seal_stream(
    sealer: _ChunkSealer, header: bytes, chunks: Iterable[BytesLike], chunk_size: int
) -> Iterator[bytes]:
    yield header
    buffer = bytearray()
    for piece in chunks:
        buffer += piece
        pos = 0
        # Strictly greater: a chunk is sealed as non-final only once we know more follows.
        while len(buffer) - pos > chunk_size:
            with memoryview(buffer) as view, view[pos : pos + chunk_size] as plain:
                sealed = sealer.seal(plain, final=False)
            yield sealed
            pos += chunk_size
        del buffer[:pos]
    yield sealer.seal(buffer, final=True)


def _open_stream(
    aes: AESGCM, object_id: str, object_id_bytes: bytes, chunks: Iterable[BytesLike]
) -> Iterator[bytes]:
    buffer = bytearray()
    source = iter(chunks)
    mode: int | None = None
    for piece in source:
        buffer += piece
        if len(buffer) >= _PREAMBLE.size:
            mode = _read_preamble(buffer)
            if mode == MODE_ONE_SHOT or len(buffer) >= _CHUNKED_HEADER.size:
                break
    if mode is None:
        raise IntegrityError("blob is truncated: no envelope header")
    if mode == MODE_ONE_SHOT:
        for piece in source:
            buffer += piece
        with memoryview(buffer) as view:
            plaintext = _open_one_shot(aes, object_id, object_id_bytes, view)
        yield plaintext
        return
    if len(buffer) < _CHUNKED_HEADER.size:
        raise IntegrityError("blob is truncated: incomplete envelope header")
    header, chunk_size, prefix = _read_chunked_header(buffer)
    opener = _ChunkOpener(aes, object_id, _aad(object_id_bytes, header), prefix)
    step = chunk_size + TAG_BYTES
    pos = len(header)
    while True:
        # Strictly greater: the last chunk is only known to be last at end of input.
        while len(buffer) - pos > step:
            with memoryview(buffer) as view, view[pos : pos + step] as sealed:
                plain = opener.open(sealed, final=False)
            yield plain
            pos += step
        del buffer[:pos]
        pos = 0
        more = next(source, None)
        if more is None:
            break
        buffer += more
    yield opener.open(buffer, final=True)


def _open_one_shot(aes: AESGCM, object_id: str, object_id_bytes: bytes, view: memoryview) -> bytes:
    size = _ONE_SHOT_HEADER.size
    if len(view) < size + TAG_BYTES:
        raise IntegrityError(_failure(object_id, "truncated"))
    header = bytes(view[:size])
    nonce = header[_PREAMBLE.size :]
    try:
        return aes.decrypt(nonce, view[size:], _aad(object_id_bytes, header))
    except InvalidTag:
        raise IntegrityError(_failure(object_id, "does not authenticate")) from None


def _read_preamble(data: BytesLike) -> int:
    """Check magic and version; return the mode. Raises ``IntegrityError``."""
    if len(data) < _PREAMBLE.size:
        raise IntegrityError("blob is truncated: no envelope header")
    magic, version, mode = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise IntegrityError("blob is not an IRMSIA envelope (bad magic)")
    if version != FORMAT_VERSION:
        raise IntegrityError("blob has an unknown envelope format version: corrupted or newer IRMSIA")
    if mode not in (MODE_ONE_SHOT, MODE_CHUNKED):
        raise IntegrityError("blob has an unknown envelope mode: corrupted")
    return int(mode)


def _read_chunked_header(data: BytesLike) -> tuple[bytes, int, bytes]:
    if len(data) < _CHUNKED_HEADER.size:
        raise IntegrityError("blob is truncated: incomplete envelope header")
    _magic, _version, _mode, chunk_size, prefix = _CHUNKED_HEADER.unpack_from(data)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError("blob has an invalid chunk size: corrupted")
    return bytes(data[: _CHUNKED_HEADER.size]), int(chunk_size), bytes(prefix)


def _chunk_nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def _aad(object_id_bytes: bytes, header: bytes) -> bytes:
    return _AAD_DOMAIN + len(object_id_bytes).to_bytes(2, "big") + object_id_bytes + header


def _object_id_bytes(object_id: str) -> bytes:
    encoded = object_id.encode("utf-8") if isinstance(object_id, str) else b""
    if not 0 < len(encoded) <= MAX_OBJECT_ID_BYTES:
        raise InvalidRequest("object id must be a non-empty string of at most 1024 bytes")
    return encoded


def _failure(object_id: str, what: str) -> str:
    shown = object_id if len(object_id) <= 64 else object_id[:61] + "..."
    return (
        f"object {shown}: encrypted blob {what} (tampered, truncated, swapped between "
        "objects, or the wrong key)"
    )
