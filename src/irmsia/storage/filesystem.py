"""Blob store on a local directory, with crash-safe atomic writes.

Each blob is one file ``<root>/<key>``. A write goes to a hidden temporary file in the
target directory (``.tmp-<random>``), is flushed and ``fsync``-ed, renamed over the
final name with ``os.replace`` (atomic on POSIX and Windows), and the directory is
``fsync``-ed so the rename itself survives a power cut. A crash therefore leaves either
the old blob or the new one under the key, plus at worst an invisible temporary file
that ``sweep_temporary`` removes later.

Files are created with mode 0600 and directories with 0700: blobs are ciphertext, but
their sizes and number are still nobody else's business.

Limitation: a key cannot be both a blob and a directory of other keys (``a`` and
``a/b``); such a write raises ``StorageError``. IRMSIA's key scheme never does this.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from irmsia.errors import BlobNotFound, StorageError
from irmsia.storage.base import (
    DEFAULT_CHUNK_SIZE,
    BlobReader,
    BytesLike,
    bounded,
    check_range,
    is_valid_key,
    validate_key,
    validate_prefix,
)

FILE_MODE = 0o600
DIR_MODE = 0o700
_TEMP_PREFIX = ".tmp-"
_PROBE_PREFIX = ".probe-"
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def make_private_dirs(directory: Path, mode: int = DIR_MODE) -> None:
    """Create ``directory`` and any missing parents, each with ``mode``.

    ``os.makedirs`` applies its mode only to the leaf, so intermediate levels would get
    the default (often world-readable) permissions; this creates every level itself.
    """
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for level in reversed(missing):
        # Another writer may create it between our check and mkdir: fine, as long as
        # it is a directory (checked by the next mkdir or open).
        with contextlib.suppress(FileExistsError):
            level.mkdir(mode=mode)
            # The new entry lives in the parent: flush it, or a power cut could lose the
            # directory (and every blob already fsynced inside it).
            fsync_directory(level.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (create, rename) to disk; no-op where unsupported."""
    if os.name != "posix":
        # Windows cannot open a directory for fsync; NTFS journals the rename itself.
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Iterable[BytesLike], file_mode: int = FILE_MODE) -> int:
    """Write ``chunks`` to ``path`` atomically and durably; return the bytes written.

    The parent directory must exist. Raises ``OSError`` from the file system, or
    whatever the iterable raises; in both cases the temporary file is removed and
    ``path`` keeps its previous content.
    """
    temp, total = write_temporary(path.parent, chunks, file_mode)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return total


def write_temporary(
    directory: Path, chunks: Iterable[BytesLike], file_mode: int = FILE_MODE
) -> tuple[Path, int]:
    """Write ``chunks`` to a new hidden temporary file in ``directory``, flushed and ``fsync``-ed;
    return its path and size. On any error the file is removed and the error re-raised."""
    temp = directory / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(temp, flags, file_mode)
    total = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                total += handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        # BaseException on purpose: a KeyboardInterrupt mid-write must not leave a
        # temporary file behind either; the exception is always re-raised.
        temp.unlink(missing_ok=True)
        raise
    return temp, total


class FilesystemBlobStore:
    """Blobs as files under ``root`` (created on first write with mode 0700)."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The directory that holds the blobs."""
        return self._root

    def put(self, key: str, data: BytesLike) -> None:
        """Store ``data`` under ``key`` atomically. Raises ``StorageError``."""
        self.put_stream(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[BytesLike]) -> int:
        """Store the concatenated chunks atomically; return the size. Raises ``StorageError``."""
        path = self._path(key)
        try:
            make_private_dirs(path.parent)
            return atomic_write(path, chunks)
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not write key {key}: {_reason(exc)}") from exc

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Return the blob or a range of it. Raises ``BlobNotFound`` or ``StorageError``."""
        handle = self._open(key, offset, length)
        try:
            with handle:
                return handle.read() if length is None else handle.read(length)
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not read key {key}: {_reason(exc)}") from exc

    def iter_chunks(
        self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE, *, offset: int = 0, length: int | None = None
    ) -> BlobReader:
        """Open the blob (or a range of it) for streaming. Raises ``BlobNotFound`` immediately
        if missing."""
        handle = self._open(key, offset, length)
        return BlobReader(bounded(handle.read, length), handle.close, chunk_size)

    def _open(self, key: str, offset: int, length: int | None) -> BinaryIO:
        """The blob's file, positioned at ``offset`` (past the end is allowed: the first read
        then returns nothing). Raises ``BlobNotFound`` or ``StorageError``."""
        check_range(offset, length)
        path = self._path(key)
        handle: BinaryIO | None = None
        try:
            handle = path.open("rb")
            if offset:
                handle.seek(offset)
            return handle
        except _MISSING as exc:
            raise BlobNotFound(f"no blob under key {key}") from exc
        except OSError as exc:
            if handle is not None:
                handle.close()
            raise StorageError(f"filesystem blob store could not read key {key}: {_reason(exc)}") from exc

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is fine. Empty directories are left in place.

        Pruning directories would race with a concurrent ``put`` into the same one.
        """
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not delete key {key}: {_reason(exc)}") from exc
        fsync_directory(path.parent)

    def exists(self, key: str) -> bool:
        """Return whether a blob file exists under ``key``."""
        try:
            return stat.S_ISREG(self._path(key).stat().st_mode)
        except _MISSING:
            return False
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not stat key {key}: {_reason(exc)}") from exc

    def size(self, key: str) -> int:
        """Return the blob's size in bytes. Raises ``BlobNotFound``."""
        try:
            info = self._path(key).stat()
        except _MISSING as exc:
            raise BlobNotFound(f"no blob under key {key}") from exc
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not stat key {key}: {_reason(exc)}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise BlobNotFound(f"no blob under key {key}")
        return info.st_size

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys starting with ``prefix`` in ascending order, lazily.

        Temporary and probe files are never listed (their names are not valid keys).
        """
        validate_prefix(prefix)
        directory, _, partial = prefix.rpartition("/")
        base = self._root / directory if directory else self._root
        start = f"{directory}/" if directory else ""
        return self._walk(base, start, partial)

    def check_writable(self) -> None:
        """Create the root if needed, then write, read back and remove a probe file."""
        probe = self._root / f"{_PROBE_PREFIX}{secrets.token_hex(8)}"
        payload = secrets.token_bytes(16)
        try:
            make_private_dirs(self._root)
            atomic_write(probe, (payload,))
            ok = probe.read_bytes() == payload
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"filesystem blob store is not writable: {_reason(exc)}") from exc
        if not ok:
            raise StorageError("filesystem blob store returned different bytes than were written")

    def sweep_temporary(self, max_age_s: float, now: float) -> int:
        """Remove temporary files left by crashed writes; return how many were removed.

        Only files whose modification time is more than ``max_age_s`` seconds before
        ``now`` (a Unix timestamp) are touched, so writes in progress are safe when
        ``max_age_s`` exceeds the longest write.
        """
        removed = 0
        if not self._root.is_dir():
            return 0
        for dirpath, _dirnames, filenames in os.walk(self._root):
            for name in filenames:
                if not name.startswith(_TEMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                try:
                    if now - path.stat().st_mtime > max_age_s:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def _walk(self, directory: Path, key_prefix: str, partial: str) -> Iterator[str]:
        """Yield keys under ``directory`` whose first name starts with ``partial``, sorted.

        Sorting each directory's entries by ``name`` for files and ``name + "/"`` for
        directories yields the full keys in plain string order, without collecting them.
        """
        try:
            with os.scandir(directory) as scan:
                entries = [
                    (entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
                    for entry in scan
                    if entry.name.startswith(partial) and is_valid_key(entry.name)
                ]
        except _MISSING:
            return
        except OSError as exc:
            raise StorageError(f"filesystem blob store could not list: {_reason(exc)}") from exc
        for sort_name, entry in sorted(entries, key=lambda pair: pair[0]):
            if sort_name.endswith("/"):
                yield from self._walk(Path(entry.path), key_prefix + sort_name, "")
            elif entry.is_file(follow_symlinks=False):
                yield key_prefix + entry.name


def _reason(exc: OSError) -> str:
    """Describe an OSError without its file name (which would reveal the store's layout)."""
    return exc.strerror or type(exc).__name__
