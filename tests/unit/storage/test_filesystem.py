"""Filesystem blob store details the contract suite cannot see: permissions, memory, layout."""

from __future__ import annotations

import gc
import os
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from irmsia.errors import StorageError
from irmsia.storage.filesystem import FilesystemBlobStore, atomic_write

MIB = 1024 * 1024


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_blobs_are_private_files_in_private_directories(tmp_path: Path) -> None:
    root = tmp_path / "data" / "blobs"
    store = FilesystemBlobStore(root)
    store.put("objects/ab/cd/k.bin", b"ciphertext")
    assert mode_of(root / "objects" / "ab" / "cd" / "k.bin") == 0o600
    for directory in (root, root / "objects", root / "objects" / "ab", root / "objects" / "ab" / "cd"):
        assert mode_of(directory) == 0o700
    assert mode_of(tmp_path / "data") == 0o700


def test_overwrite_keeps_the_file_private(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("k.bin", b"one")
    store.put_stream("k.bin", [b"two"])
    assert mode_of(tmp_path / "k.bin") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.bin"]


def test_streaming_a_large_blob_holds_only_a_few_chunks_in_memory(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    total = 24 * MIB
    piece = 256 * 1024

    def source() -> Iterator[bytes]:
        for _ in range(total // piece):
            yield b"\xab" * piece

    tracemalloc.start()
    try:
        assert store.put_stream("big.bin", source()) == total
        read = sum(len(chunk) for chunk in store.iter_chunks("big.bin", chunk_size=MIB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == total
    assert peak < 4 * MIB


def test_a_key_under_an_existing_blob_is_a_storage_error(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("a", b"blob")
    with pytest.raises(StorageError, match="a/b"):
        store.put("a/b", b"nested")
    assert store.get("a") == b"blob"


def test_unwritable_root_fails_the_readiness_probe(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    store = FilesystemBlobStore(not_a_directory / "blobs")
    with pytest.raises(StorageError, match="not writable") as caught:
        store.check_writable()
    assert str(tmp_path) not in str(caught.value)


def test_readiness_probe_creates_the_root_and_leaves_it_empty(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    FilesystemBlobStore(root).check_writable()
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_atomic_write_removes_its_temporary_file_when_interrupted(tmp_path: Path) -> None:
    def interrupted() -> Iterator[bytes]:
        yield b"partial"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "k.bin", interrupted())
    assert list(tmp_path.iterdir()) == []


def test_abandoned_reader_closes_its_file_without_a_warning(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("k.bin", b"x" * 100)
    reader = store.iter_chunks("k.bin", chunk_size=10)
    fd_count = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    del reader
    gc.collect()  # filterwarnings=error turns a ResourceWarning from an unclosed file into a failure
    if fd_count is not None:
        assert len(os.listdir("/proc/self/fd")) == fd_count - 1


def test_sweep_ignores_blobs_and_fresh_temporary_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("objects/k.bin", b"keep")
    temp = tmp_path / "objects" / ".tmp-0123456789abcdef"
    temp.write_bytes(b"left by a crash")
    mtime = temp.stat().st_mtime
    assert store.sweep_temporary(max_age_s=3600, now=mtime + 10) == 0
    assert store.sweep_temporary(max_age_s=3600, now=mtime + 3601) == 1
    assert not temp.exists()
    assert store.get("objects/k.bin") == b"keep"
    assert FilesystemBlobStore(tmp_path / "absent").sweep_temporary(max_age_s=0, now=mtime) == 0


def test_a_new_directory_is_flushed_into_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A blob fsynced inside a directory whose own entry was never flushed can vanish with
    # that directory on a power cut: every directory the store creates is flushed in its parent.
    from irmsia.storage import filesystem

    flushed: list[Path] = []
    real = filesystem.fsync_directory
    monkeypatch.setattr(filesystem, "fsync_directory", lambda d: (flushed.append(Path(d)), real(d))[1])
    store = FilesystemBlobStore(tmp_path / "root")
    store.put("objects/ab/job1/one.bin", b"x")
    created = [tmp_path / "root", tmp_path / "root/objects", tmp_path / "root/objects/ab"]
    assert all(parent in flushed for parent in [tmp_path, *created])
    flushed.clear()
    store.put("objects/ab/job1/two.bin", b"y")
    assert flushed == [tmp_path / "root/objects/ab/job1"]  # nothing new: only the file's rename


def test_a_stream_of_several_parts_is_one_file_flushed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ingest writes an instance's objects as the parts of one stream: one file to create,
    # one fsync for its data and one for its directory's entry.
    from irmsia.storage import filesystem

    store = FilesystemBlobStore(tmp_path / "root")
    store.put("objects/ab/warm.bin", b"w")  # the directories exist: only the rename follows
    flushed: list[Path] = []
    synced: list[int] = []
    real_dir, real_fsync = filesystem.fsync_directory, os.fsync
    monkeypatch.setattr(filesystem, "fsync_directory", lambda d: (flushed.append(Path(d)), real_dir(d))[1])
    monkeypatch.setattr(filesystem.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    parts = [bytes([n]) * (1000 + n) for n in range(3)]
    assert store.put_stream("objects/ab/job.bin", parts) == sum(len(part) for part in parts)
    assert flushed == [tmp_path / "root/objects/ab"]
    assert len(synced) == 2  # the file before its rename, then the directory
    assert store.get("objects/ab/job.bin") == b"".join(parts)
    assert store.get("objects/ab/job.bin", offset=1000, length=1001) == parts[1]
    assert {p.name for p in (tmp_path / "root/objects/ab").iterdir()} == {"warm.bin", "job.bin"}
