"""Key-encryption keys (KEKs): the ``KeyProvider`` interface and the local key ring.

A ``KeyProvider`` wraps (encrypts) and unwraps the per-object data keys of
``irmsia.crypto.envelope``. Each wrapped key records the id of the KEK that wrapped it,
so after ``rotate()`` old wrapped keys still unwrap, and ``rewrap()`` moves them to the
current KEK without touching any blob.

``LocalKeyProvider`` — KEKs derived from and protected by ``ENCRYPTION_KEY`` (the 32-byte
master key, given as 64 hex characters in the environment or in ``ENCRYPTION_KEY_FILE``, which
``read_master_key_file`` reads):

* ``local-1`` is derived from the master key with HKDF-SHA256
  (info ``irmsia/kek/local-1``), so a deployment that never rotates needs no file.
* ``rotate()`` creates ``local-2``, ``local-3``, … as fresh random 256-bit keys and
  stores them in the key-ring file, each encrypted with AES-256-GCM under a ring key
  derived from the master key (HKDF info ``irmsia/keyring/v1``); the associated data
  binds the entry's key id. The file never holds a key in the clear, is written
  atomically (temporary file, fsync, rename) with mode 0600, and looks like::

      {"format": "irmsia-keyring", "version": 1,
       "keys": [{"id": "local-2", "nonce": "<base64 12 bytes>",
                 "key": "<base64 AES-GCM ciphertext+tag of the 32-byte KEK>"}]}

  The current KEK is the one with the highest number. Losing the ring file loses the
  data keys wrapped under rotated KEKs: back it up with the database.
* a data key is wrapped with AES-256-GCM under the KEK, associated data
  ``irmsia/dek/v1`` + key id; the wrapped form is ``nonce (12) || ciphertext+tag (48)``.

Key ids are labels (``local-<n>``), never derived from key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from irmsia.errors import ConfigError, IntegrityError, UnknownKey
from irmsia.storage.filesystem import atomic_write, make_private_dirs

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
RING_FORMAT = "irmsia-keyring"
RING_VERSION = 1
_DEK_AAD = b"irmsia/dek/v1\x00"
_RING_AAD = b"irmsia/keyring/v1\x00"
_LOCAL_ID = re.compile(r"local-([1-9][0-9]{0,8})")
_KEY_FILE_MAX = 1024  # a key file is 64 hex characters and a newline; anything far longer is a mistake


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the KEK named by ``key_id``.

    Store both fields next to the object they protect (the database row); deleting them
    makes the object's blob undecryptable (crypto-shredding).
    """

    key_id: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(key_id={self.key_id!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


@runtime_checkable
class KeyProvider(Protocol):
    """Holds key-encryption keys and wraps data keys with them."""

    def current_key_id(self) -> str:
        """Return the id of the KEK that ``wrap`` uses now."""
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every KEK that can still unwrap, oldest first."""
        ...

    def wrap(self, dek: bytes) -> WrappedKey:
        """Encrypt a data key under the current KEK."""
        ...

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Return the data key. Raises ``UnknownKey`` or ``IntegrityError``."""
        ...

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """Re-encrypt a wrapped data key under the current KEK (same data key)."""
        ...

    def rotate(self) -> str:
        """Create a new KEK, make it current and return its id."""
        ...


def derive_key(master_key: bytes, info: bytes) -> bytes:
    """Derive an independent 256-bit key from the master key for one purpose (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master_key)


def parse_master_key(hex_key: str) -> bytes:
    """Decode ``ENCRYPTION_KEY`` (64 hex characters). Raises ``ConfigError`` without echoing it."""
    try:
        key = bytes.fromhex(hex_key.strip())
    except ValueError:
        raise ConfigError("ENCRYPTION_KEY must be 64 hexadecimal characters (32 bytes)") from None
    if len(key) != KEY_BYTES:
        raise ConfigError("ENCRYPTION_KEY must be 64 hexadecimal characters (32 bytes)")
    return key


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A master key read from ``ENCRYPTION_KEY_FILE``; ``exposed`` when group or others may access it."""

    key: bytes = field(repr=False)
    mode: int
    exposed: bool


def read_master_key_file(path: Path) -> KeyFile:
    """Read the master key from a file holding its 64 hex characters (surrounding whitespace allowed).

    Raises ``ConfigError`` with one line naming ``ENCRYPTION_KEY_FILE`` and the path — never
    the content — for a missing, unreadable or non-regular file and for content that is not
    64 hex characters. Whether a file that group or others may access is acceptable is the
    caller's policy (``exposed``; always false where POSIX modes do not exist).
    """
    name = "ENCRYPTION_KEY_FILE"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{name} {path} is not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(_KEY_FILE_MAX + 1)
    except FileNotFoundError:
        raise ConfigError(f"{name} {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{name} {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{name} {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    expected = f"{name} {path} must hold 64 hex characters (32 bytes)"
    if len(raw) > _KEY_FILE_MAX:
        raise ConfigError(f"{expected}; it is longer than {_KEY_FILE_MAX} bytes")
    try:
        text = raw.decode("ascii").strip()
        key = bytes.fromhex(text)
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{expected}; it contains other characters") from None
    if len(key) != KEY_BYTES or len(text) != 2 * KEY_BYTES:
        raise ConfigError(f"{expected}; it holds {len(text)} characters")
    mode = stat.S_IMODE(info.st_mode)
    return KeyFile(key=key, mode=mode, exposed=os.name == "posix" and bool(mode & 0o077))


class LocalKeyProvider:
    """KEKs from ``ENCRYPTION_KEY`` plus a key-ring file of rotated KEKs (see module docs).

    ``master_key`` is the 32 raw bytes. Without ``ring_path`` only ``local-1`` exists and
    ``rotate()`` raises ``ConfigError``. The ring is read here; a ring that does not
    decrypt under ``master_key`` raises ``IntegrityError`` (wrong key or edited file).

    Thread-safe, and safe across processes sharing the ring file: a rotation by another
    process (``irmsia keys rotate`` next to a running server) is seen at the next
    ``wrap`` (one ``stat`` of the file per call) or at an unknown key id, and concurrent
    rotations are serialised with an advisory lock on ``<ring>.lock`` (POSIX only; on
    Windows rotate from one process at a time). KEKs once loaded are never forgotten.
    """

    def __init__(self, master_key: bytes, ring_path: Path | str | None = None) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigError("the master encryption key must be exactly 32 bytes")
        self._ring_path = Path(ring_path) if ring_path is not None else None
        self._ring_cipher = AESGCM(derive_key(master_key, b"irmsia/keyring/v1"))
        self._lock = threading.Lock()
        self._keks: dict[int, AESGCM] = {1: AESGCM(derive_key(master_key, b"irmsia/kek/local-1"))}
        self._stamp: tuple[int, int, int] | None = None
        self._refresh(force=True)

    def __repr__(self) -> str:
        return f"LocalKeyProvider(current={_local_id(max(self._keks))!r}, keys={len(self._keks)})"

    def current_key_id(self) -> str:
        """Return the id of the newest KEK."""
        self._refresh()
        with self._lock:
            return _local_id(max(self._keks))

    def key_ids(self) -> tuple[str, ...]:
        """Return every KEK id, oldest first."""
        self._refresh()
        with self._lock:
            return tuple(_local_id(number) for number in sorted(self._keks))

    def wrap(self, dek: bytes) -> WrappedKey:
        """Encrypt ``dek`` under the newest KEK."""
        self._refresh()
        with self._lock:
            number = max(self._keks)
            kek = self._keks[number]
        key_id = _local_id(number)
        nonce = os.urandom(NONCE_BYTES)
        return WrappedKey(key_id, nonce + kek.encrypt(nonce, dek, _DEK_AAD + key_id.encode()))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Decrypt a wrapped data key.

        Raises ``UnknownKey`` if no KEK has that id (after re-reading the ring, in case
        another process rotated) and ``IntegrityError`` if the wrapped key does not
        authenticate under it (tampered, relabelled, or a different master key).
        """
        kek = self._kek_for(wrapped.key_id)
        blob = wrapped.ciphertext
        if len(blob) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
            raise IntegrityError("wrapped data key has the wrong length: corrupted")
        try:
            dek = kek.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _DEK_AAD + wrapped.key_id.encode())
        except InvalidTag:
            raise IntegrityError(
                f"wrapped data key does not authenticate under KEK {wrapped.key_id}: "
                "modified, mislabelled, or a different ENCRYPTION_KEY"
            ) from None
        return dek

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """Unwrap and wrap again under the newest KEK (returned as is if already current)."""
        if wrapped.key_id == self.current_key_id():
            return wrapped
        return self.wrap(self.unwrap(wrapped))

    def rotate(self) -> str:
        """Add a fresh random KEK to the ring file, make it current and return its id.

        The ring is re-read under the file lock, so a rotation by another process is
        never overwritten. Raises ``ConfigError`` without a ring path, ``OSError`` if
        the file cannot be written.
        """
        ring_path = self._ring_path
        if ring_path is None:
            raise ConfigError("key rotation needs a key-ring file (KEY_RING_PATH)")
        with self._lock, _ring_file_lock(ring_path):
            entries = self._read_entries()
            keks = self._decrypt_entries(entries)
            number = max([*self._keks, *keks]) + 1
            key_id = _local_id(number)
            kek = AESGCM.generate_key(bit_length=256)
            nonce = os.urandom(NONCE_BYTES)
            entries.append(
                {
                    "id": key_id,
                    "nonce": _b64(nonce),
                    "key": _b64(self._ring_cipher.encrypt(nonce, kek, _RING_AAD + key_id.encode())),
                }
            )
            document = {"format": RING_FORMAT, "version": RING_VERSION, "keys": entries}
            _write_ring(ring_path, json.dumps(document, indent=2).encode())
            for known, loaded in keks.items():
                self._keks.setdefault(known, loaded)
            self._keks[number] = AESGCM(kek)
            self._stamp = _file_stamp(ring_path)
        return key_id

    def _kek_for(self, key_id: str) -> AESGCM:
        match = _LOCAL_ID.fullmatch(key_id)
        if match is None:
            raise UnknownKey("wrapped data key names a KEK that is not a local key")
        number = int(match.group(1))
        with self._lock:
            kek = self._keks.get(number)
        if kek is None:
            self._refresh(force=True)
            with self._lock:
                kek = self._keks.get(number)
        if kek is None:
            raise UnknownKey(f"KEK {key_id} is not in the local key ring")
        return kek

    def _refresh(self, force: bool = False) -> None:
        """Load KEKs from the ring file if it changed since the last load (or if forced).

        A ring file that has disappeared changes nothing: keys already loaded stay usable.
        """
        if self._ring_path is None:
            return
        stamp = _file_stamp(self._ring_path)
        if stamp is None or (stamp == self._stamp and not force):
            return
        with self._lock:
            for number, kek in self._decrypt_entries(self._read_entries()).items():
                # Never replace a KEK already in use here, even if the file was swapped.
                self._keks.setdefault(number, kek)
            self._stamp = stamp

    def _read_entries(self) -> list[dict[str, Any]]:
        """Return the ring file's entries; no file means no rotated keys."""
        if self._ring_path is None:
            return []
        try:
            raw = self._ring_path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise IntegrityError("key-ring file is not valid JSON: corrupted") from None
        if (
            not isinstance(document, dict)
            or document.get("format") != RING_FORMAT
            or not isinstance(document.get("keys"), list)
        ):
            raise IntegrityError("key-ring file is not an IRMSIA key ring")
        if document.get("version") != RING_VERSION:
            raise ConfigError("key-ring file has an unsupported version; upgrade IRMSIA")
        entries: list[dict[str, Any]] = document["keys"]
        return entries

    def _decrypt_entries(self, entries: list[dict[str, Any]]) -> dict[int, AESGCM]:
        keks: dict[int, AESGCM] = {}
        for entry in entries:
            key_id, nonce, sealed = _entry_fields(entry)
            match = _LOCAL_ID.fullmatch(key_id)
            if match is None or int(match.group(1)) < 2 or int(match.group(1)) in keks:
                raise IntegrityError("key-ring file has an invalid or duplicate key id")
            try:
                kek = self._ring_cipher.decrypt(nonce, sealed, _RING_AAD + key_id.encode())
            except InvalidTag:
                raise IntegrityError(
                    "key-ring file does not decrypt under ENCRYPTION_KEY: wrong key or modified file"
                ) from None
            keks[int(match.group(1))] = AESGCM(kek)
        return keks


def _entry_fields(entry: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    try:
        key_id = entry["id"]
        nonce = base64.b64decode(entry["nonce"], validate=True)
        sealed = base64.b64decode(entry["key"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise IntegrityError("key-ring file has a malformed entry") from None
    if not isinstance(key_id, str) or len(nonce) != NONCE_BYTES:
        raise IntegrityError("key-ring file has a malformed entry")
    return key_id, nonce, sealed


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """Identify a version of the ring file; an atomic replace changes inode and size."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@contextmanager
def _ring_file_lock(ring_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<ring>.lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    make_private_dirs(ring_path.parent)
    fd = os.open(ring_path.with_name(ring_path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_ring(path: Path, payload: bytes) -> None:
    make_private_dirs(path.parent)
    atomic_write(path, (payload,), file_mode=0o600)


def _local_id(number: int) -> str:
    return f"local-{number}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
