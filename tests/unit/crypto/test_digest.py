"""SHA-256 helpers agree with each other and with the published test vectors."""

from __future__ import annotations

import io

from irmsia.crypto.digest import (
    DigestingStream,
    sha256_hex,
    sha256_hex_chunks,
    sha256_hex_file,
)

# FIPS 180-2 example: SHA-256("abc").
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_digest_of_bytes_matches_the_standard_vector() -> None:
    assert sha256_hex(b"abc") == ABC
    assert sha256_hex(b"") == EMPTY
    assert sha256_hex(memoryview(bytearray(b"xabc"))[1:]) == ABC


def test_digest_of_chunks_equals_digest_of_their_concatenation() -> None:
    assert sha256_hex_chunks([b"a", b"", bytearray(b"b"), memoryview(b"c")]) == ABC
    assert sha256_hex_chunks([]) == EMPTY


def test_digest_of_a_file_object_reads_from_its_position() -> None:
    handle = io.BytesIO(b"zzabc")
    handle.seek(2)
    assert sha256_hex_file(handle, read_size=1) == ABC


def test_digesting_stream_passes_chunks_through_and_hashes_them() -> None:
    stream = DigestingStream(iter([b"ab", b"c"]))
    assert list(stream) == [b"ab", b"c"]
    assert stream.hexdigest() == ABC
    assert stream.size == 3
