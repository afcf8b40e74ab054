"""One contract for every blob store: memory, filesystem, and S3 against a real loopback server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from irmsia.errors import BlobNotFound, InvalidRequest, StorageError
from irmsia.storage import BlobStore
from irmsia.storage.filesystem import FilesystemBlobStore
from tests.contract.conftest import S3_PART_SIZE, S3Server

MIB = 1024 * 1024


class Boom(Exception):
    """Raised by a test's chunk source to simulate a failing upload."""


def random_chunks(total: int, piece: int, on_chunk: Callable[[bytes], object]) -> Iterator[bytes]:
    """Yield ``total`` random bytes in ``piece``-sized chunks, showing each to ``on_chunk``."""
    sent = 0
    while sent < total:
        chunk = os.urandom(min(piece, total - sent))
        on_chunk(chunk)
        sent += len(chunk)
        yield chunk


# --- round trips ---------------------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(blob_store: BlobStore) -> None:
    blob_store.put("objects/ab/cd/one.bin", b"\x00encrypted\xff")
    assert blob_store.get("objects/ab/cd/one.bin") == b"\x00encrypted\xff"
    assert blob_store.exists("objects/ab/cd/one.bin")
    assert blob_store.size("objects/ab/cd/one.bin") == 11


def test_bytes_like_inputs_are_stored(blob_store: BlobStore) -> None:
    blob_store.put("a.bin", bytearray(b"from a bytearray"))
    blob_store.put("b.bin", memoryview(b"xfrom a view")[1:])
    assert blob_store.get("a.bin") == b"from a bytearray"
    assert blob_store.get("b.bin") == b"from a view"


def test_empty_blob_round_trips(blob_store: BlobStore) -> None:
    blob_store.put("empty.bin", b"")
    assert blob_store.get("empty.bin") == b""
    assert blob_store.size("empty.bin") == 0
    assert list(blob_store.iter_chunks("empty.bin")) == []
    assert blob_store.put_stream("empty-stream.bin", iter([])) == 0
    assert blob_store.get("empty-stream.bin") == b""


def test_multi_megabyte_stream_round_trips_in_bounded_chunks(blob_store: BlobStore) -> None:
    total = 2 * S3_PART_SIZE + 3 * MIB + 17  # several multipart parts on S3, odd tail
    sent = hashlib.sha256()
    written = blob_store.put_stream("objects/big.bin", random_chunks(total, 256 * 1024, sent.update))
    assert written == total
    assert blob_store.size("objects/big.bin") == total
    received = hashlib.sha256()
    largest = 0
    with blob_store.iter_chunks("objects/big.bin", chunk_size=MIB) as reader:
        for chunk in reader:
            largest = max(largest, len(chunk))
            received.update(chunk)
    assert largest <= MIB
    assert received.hexdigest() == sent.hexdigest()


def test_small_chunk_size_is_honoured(blob_store: BlobStore) -> None:
    blob_store.put("k.bin", b"0123456789")
    assert list(blob_store.iter_chunks("k.bin", chunk_size=4)) == [b"0123", b"4567", b"89"]


def test_reader_can_be_closed_before_the_end(blob_store: BlobStore) -> None:
    blob_store.put("k.bin", b"x" * 10_000)
    reader = blob_store.iter_chunks("k.bin", chunk_size=100)
    assert next(reader) == b"x" * 100
    reader.close()
    assert list(reader) == []
    blob_store.delete("k.bin")  # no open handle keeps it alive
    assert not blob_store.exists("k.bin")


def test_overwrite_replaces_the_whole_blob(blob_store: BlobStore) -> None:
    blob_store.put("k.bin", b"a much longer first version")
    blob_store.put("k.bin", b"short")
    assert blob_store.get("k.bin") == b"short"
    assert blob_store.size("k.bin") == 5
    blob_store.put_stream("k.bin", [b"str", b"eam"])
    assert blob_store.get("k.bin") == b"stream"


# --- delete and missing blobs --------------------------------------------------------------


def test_delete_removes_the_blob_and_is_idempotent(blob_store: BlobStore) -> None:
    blob_store.put("objects/k.bin", b"data")
    blob_store.delete("objects/k.bin")
    assert not blob_store.exists("objects/k.bin")
    blob_store.delete("objects/k.bin")
    blob_store.delete("never/existed.bin")
    assert list(blob_store.list()) == []


def test_ranges_read_the_bytes_they_name(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 40  # 10 240 bytes, every offset distinct modulo 256
    blob_store.put("objects/ab/pack.bin", data)
    assert blob_store.get("objects/ab/pack.bin", offset=0, length=10) == data[:10]
    assert blob_store.get("objects/ab/pack.bin", offset=300, length=4000) == data[300:4300]
    assert blob_store.get("objects/ab/pack.bin", offset=10_000) == data[10_000:]
    assert blob_store.get("objects/ab/pack.bin", offset=5, length=0) == b""
    streamed = blob_store.iter_chunks("objects/ab/pack.bin", chunk_size=1000, offset=1234, length=5000)
    chunks = list(streamed)
    assert b"".join(chunks) == data[1234:6234]
    assert max(len(chunk) for chunk in chunks) <= 1000
    assert b"".join(blob_store.iter_chunks("objects/ab/pack.bin", offset=9000)) == data[9000:]


def test_a_range_past_the_end_yields_what_there_is(blob_store: BlobStore) -> None:
    blob_store.put("objects/ab/short.bin", b"0123456789")
    assert blob_store.get("objects/ab/short.bin", offset=6, length=100) == b"6789"
    assert blob_store.get("objects/ab/short.bin", offset=10, length=5) == b""
    assert blob_store.get("objects/ab/short.bin", offset=50) == b""
    assert b"".join(blob_store.iter_chunks("objects/ab/short.bin", offset=8, length=10)) == b"89"
    assert b"".join(blob_store.iter_chunks("objects/ab/short.bin", offset=99, length=10)) == b""


def test_ranges_of_a_missing_blob_or_negative_ranges_are_refused(blob_store: BlobStore) -> None:
    blob_store.put("objects/ab/k.bin", b"data")
    for offset, length in ((0, 4), (2, None), (1, 0)):
        with pytest.raises(BlobNotFound):
            blob_store.get("objects/ab/missing.bin", offset=offset, length=length)
        with pytest.raises(BlobNotFound):
            blob_store.iter_chunks("objects/ab/missing.bin", offset=offset, length=length)
    for offset, length in ((-1, None), (0, -1)):
        with pytest.raises(InvalidRequest):
            blob_store.get("objects/ab/k.bin", offset=offset, length=length)
        with pytest.raises(InvalidRequest):
            blob_store.iter_chunks("objects/ab/k.bin", offset=offset, length=length)


def test_missing_blob_raises_blob_not_found(blob_store: BlobStore) -> None:
    assert not blob_store.exists("objects/missing.bin")
    with pytest.raises(BlobNotFound):
        blob_store.get("objects/missing.bin")
    with pytest.raises(BlobNotFound):
        blob_store.size("objects/missing.bin")
    # Raised when the download is opened, not at the first chunk.
    with pytest.raises(BlobNotFound):
        blob_store.iter_chunks("objects/missing.bin")


def test_a_key_prefix_is_not_a_blob(blob_store: BlobStore) -> None:
    blob_store.put("objects/ab/k.bin", b"data")
    assert not blob_store.exists("objects/ab")
    with pytest.raises(BlobNotFound):
        blob_store.get("objects/ab")


# --- listing --------------------------------------------------------------------------------


def test_list_yields_keys_under_a_prefix_in_ascending_order(blob_store: BlobStore) -> None:
    keys = ["objects/ab/2.bin", "objects/ab/1.bin", "objects/b/1.bin", "objects/abc.bin", "other/1.bin"]
    for key in keys:
        blob_store.put(key, b"x")
    assert list(blob_store.list()) == sorted(keys)
    assert list(blob_store.list("objects/ab/")) == ["objects/ab/1.bin", "objects/ab/2.bin"]
    assert list(blob_store.list("objects/ab")) == ["objects/ab/1.bin", "objects/ab/2.bin", "objects/abc.bin"]
    assert list(blob_store.list("objects/a")) == ["objects/ab/1.bin", "objects/ab/2.bin", "objects/abc.bin"]
    assert list(blob_store.list("nothing/")) == []
    assert list(blob_store.list("objects/ab/1.bin")) == ["objects/ab/1.bin"]


def test_list_order_is_plain_string_order_across_directories(blob_store: BlobStore) -> None:
    # '-' < '.' < '/' < '0': a directory's keys sort between its siblings by name + '/'.
    keys = ["a/z.bin", "a-b.bin", "a.b", "a0.bin", "a/b/c.bin"]
    for key in keys:
        blob_store.put(key, b"x")
    assert list(blob_store.list()) == sorted(keys)


# --- key validation ------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/abs/path.bin",
    "../escape.bin",
    "objects/../../escape.bin",
    "objects/./k.bin",
    "objects//k.bin",
    "objects/k.bin/",
    ".hidden",
    "objects/.tmp-123",
    "Objects/Upper.bin",
    "objects\\k.bin",
    "objects/k bin",
    "objects/k\x00.bin",
    "objects/é.bin",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_before_touching_the_backend(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        blob_store.put(key, b"data")
    if key:
        assert key not in str(caught.value)
    for operation in (
        blob_store.get,
        blob_store.exists,
        blob_store.size,
        blob_store.delete,
        blob_store.iter_chunks,
    ):
        with pytest.raises(InvalidRequest):
            operation(key)
    with pytest.raises(InvalidRequest):
        blob_store.put_stream(key, [b"data"])
    assert list(blob_store.list()) == []


@pytest.mark.parametrize("prefix", ["/objects", "../", "objects//", ".tmp", "objects/../"])
def test_bad_list_prefixes_are_rejected(blob_store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidRequest):
        blob_store.list(prefix)


def test_longest_valid_key_is_accepted(blob_store: BlobStore) -> None:
    key = "/".join(["d" * 100] * 9) + "/" + "k" * 110 + ".bin"
    assert len(key) <= 1024
    blob_store.put(key, b"deep")
    assert blob_store.get(key) == b"deep"


# --- failures and atomicity ----------------------------------------------------------------


def test_failed_stream_keeps_the_previous_blob(blob_store: BlobStore) -> None:
    blob_store.put("k.bin", b"previous version")

    def failing() -> Iterator[bytes]:
        yield b"n" * MIB
        yield b"n" * (S3_PART_SIZE + MIB)  # past one S3 part: a multipart upload is under way
        raise Boom

    with pytest.raises(Boom):
        blob_store.put_stream("k.bin", failing())
    assert blob_store.get("k.bin") == b"previous version"


def test_failed_stream_to_a_new_key_leaves_nothing(blob_store: BlobStore) -> None:
    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise Boom

    with pytest.raises(Boom):
        blob_store.put_stream("objects/new.bin", failing())
    assert not blob_store.exists("objects/new.bin")
    assert list(blob_store.list()) == []


def test_check_writable_passes_and_leaves_no_key_behind(blob_store: BlobStore) -> None:
    blob_store.check_writable()
    assert list(blob_store.list()) == []


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from irmsia.storage.filesystem import FilesystemBlobStore

    def chunks():
        yield b"N" * 65536
        yield b"N" * 65536
        os._exit(3)  # the process dies mid-write: no cleanup, no exception handling

    FilesystemBlobStore(sys.argv[1]).put_stream("objects/ab/victim.bin", chunks())
    """
)


def test_filesystem_crash_mid_write_leaves_no_partial_file_under_the_key(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FilesystemBlobStore(root)
    store.put("objects/ab/victim.bin", b"previous version")
    result = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(root)], capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 3, result.stderr.decode(errors="replace")
    assert store.get("objects/ab/victim.bin") == b"previous version"
    assert list(store.list()) == ["objects/ab/victim.bin"]
    leftovers = [p for p in (root / "objects" / "ab").iterdir() if p.name != "victim.bin"]
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".tmp-")
    # The sweep removes what the crash left once it is old enough, and nothing else.
    mtime = leftovers[0].stat().st_mtime
    assert store.sweep_temporary(max_age_s=60, now=mtime + 1) == 0
    assert store.sweep_temporary(max_age_s=60, now=mtime + 61) == 1
    assert sorted(p.name for p in (root / "objects" / "ab").iterdir()) == ["victim.bin"]


def test_filesystem_crash_before_the_first_write_leaves_no_key(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    result = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(root)], capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 3, result.stderr.decode(errors="replace")
    store = FilesystemBlobStore(root)
    assert not store.exists("objects/ab/victim.bin")
    assert list(store.list()) == []


# --- S3 specifics ---------------------------------------------------------------------------


def test_s3_prefixes_isolate_stores_sharing_a_bucket(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    first = s3_server.store(bucket, prefix="tenant-a")
    second = s3_server.store(bucket, prefix="tenant-b/")
    first.put("k.bin", b"a")
    second.put("k.bin", b"b")
    assert first.get("k.bin") == b"a"
    assert list(second.list()) == ["k.bin"]
    stored = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(item["Key"] for item in stored) == ["tenant-a/k.bin", "tenant-b/k.bin"]


def test_s3_failed_multipart_upload_is_aborted(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    store = s3_server.store(bucket, part_size=S3_PART_SIZE)

    def failing() -> Iterator[bytes]:
        yield b"n" * (S3_PART_SIZE + 1)
        raise Boom

    with pytest.raises(Boom):
        store.put_stream("k.bin", failing())
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_missing_bucket_is_a_storage_error(s3_server: S3Server) -> None:
    store = s3_server.store("no-such-bucket-here")
    with pytest.raises(StorageError, match="NoSuchBucket") as caught:
        store.check_writable()
    assert not isinstance(caught.value, BlobNotFound)
    assert s3_server.secret_access_key not in str(caught.value)
    with pytest.raises(StorageError):
        store.put("k.bin", b"x")


def test_s3_unreachable_server_is_a_storage_error(s3_server: S3Server) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    store = unreachable.store("bucket", max_attempts=1, connect_timeout_s=2)
    with pytest.raises(StorageError):
        store.get("k.bin")
