"""Envelope encryption: round trips, tamper detection, rotation without re-encryption."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from irmsia.crypto import envelope
from irmsia.crypto.envelope import (
    CHUNKED_HEADER_SIZE,
    MAGIC,
    ONE_SHOT_HEADER_SIZE,
    TAG_BYTES,
    EnvelopeCipher,
    blob_size,
)
from irmsia.crypto.keys import LocalKeyProvider, WrappedKey
from irmsia.errors import IntegrityError, InvalidRequest, UnknownKey
from tests.unit.crypto.conftest import MASTER_KEY, OTHER_MASTER_KEY

CHUNK = 1000  # small plaintext chunk so streams have many chunks cheaply
STEP = CHUNK + TAG_BYTES
HEADER = CHUNKED_HEADER_SIZE


@pytest.fixture
def cipher(local_keys: LocalKeyProvider) -> EnvelopeCipher:
    return EnvelopeCipher(local_keys, chunk_size=CHUNK)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def seal_stream(cipher: EnvelopeCipher, object_id: str, data: bytes) -> tuple[bytes, WrappedKey]:
    sealed = cipher.encrypt_stream(object_id, pieces(data, 333))
    return b"".join(sealed.chunks), sealed.wrapped_key


def flip(blob: bytes | bytearray, index: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


# --- one-shot format ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 512 * 1024])
def test_one_shot_round_trip_returns_the_plaintext(cipher: EnvelopeCipher, size: int) -> None:
    plaintext = os.urandom(size)
    sealed = cipher.encrypt("obj-1", plaintext)
    assert cipher.decrypt("obj-1", sealed.blob, sealed.wrapped_key) == plaintext


def test_one_shot_blob_is_header_plus_ciphertext_and_tag(cipher: EnvelopeCipher) -> None:
    plaintext = b"A" * 4096
    sealed = cipher.encrypt("obj-1", plaintext)
    assert sealed.blob.startswith(MAGIC)
    assert len(sealed.blob) == ONE_SHOT_HEADER_SIZE + len(plaintext) + TAG_BYTES == blob_size(len(plaintext))
    assert b"AAAAAAAA" not in sealed.blob


def test_one_shot_without_encrypt_into_gives_the_same_format(
    cipher: EnvelopeCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older cryptography releases lack AESGCM.encrypt_into; the fallback must interoperate.
    monkeypatch.setattr(envelope, "_HAS_ENCRYPT_INTO", False)
    sealed = cipher.encrypt("obj-1", b"older library")
    monkeypatch.undo()
    assert len(sealed.blob) == ONE_SHOT_HEADER_SIZE + len(b"older library") + TAG_BYTES
    assert cipher.decrypt("obj-1", sealed.blob, sealed.wrapped_key) == b"older library"


def test_bytearray_and_memoryview_plaintexts_are_accepted(cipher: EnvelopeCipher) -> None:
    data = bytearray(b"pixel data" * 100)
    sealed = cipher.encrypt("obj-1", memoryview(data)[10:])
    assert cipher.decrypt("obj-1", memoryview(sealed.blob), sealed.wrapped_key) == bytes(data[10:])


def test_each_object_gets_a_fresh_data_key_and_nonce(cipher: EnvelopeCipher) -> None:
    first = cipher.encrypt("obj-1", b"same content")
    second = cipher.encrypt("obj-1", b"same content")
    assert first.blob != second.blob
    assert first.wrapped_key.ciphertext != second.wrapped_key.ciphertext
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", first.blob, second.wrapped_key)


ONE_SHOT_TAMPERING: dict[str, Callable[[bytearray], bytes]] = {
    "magic": lambda blob: flip(blob, 0),
    "version": lambda blob: flip(blob, 4),
    "mode": lambda blob: flip(blob, 5),
    "nonce": lambda blob: flip(blob, 10),
    "ciphertext": lambda blob: flip(blob, ONE_SHOT_HEADER_SIZE + 5),
    "tag": lambda blob: flip(blob, len(blob) - 1),
    "truncated by one byte": lambda blob: bytes(blob[:-1]),
    "truncated to the header": lambda blob: bytes(blob[:ONE_SHOT_HEADER_SIZE]),
    "empty": lambda blob: b"",
    "appended byte": lambda blob: bytes(blob) + b"\x00",
}


@pytest.mark.parametrize("tamper", ONE_SHOT_TAMPERING.values(), ids=ONE_SHOT_TAMPERING.keys())
def test_tampered_one_shot_blob_raises_integrity_error(
    cipher: EnvelopeCipher, tamper: Callable[[bytearray], bytes]
) -> None:
    sealed = cipher.encrypt("obj-1", b"x" * 200)
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", tamper(sealed.blob), sealed.wrapped_key)
    with pytest.raises(IntegrityError):
        b"".join(cipher.decrypt_stream("obj-1", [tamper(sealed.blob)], sealed.wrapped_key))


def test_blob_decrypted_under_another_object_id_is_rejected(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt("obj-1", b"study one")
    with pytest.raises(IntegrityError, match="obj-2"):
        cipher.decrypt("obj-2", sealed.blob, sealed.wrapped_key)


def test_blob_swapped_between_objects_is_rejected(cipher: EnvelopeCipher) -> None:
    one = cipher.encrypt("obj-1", b"study one")
    two = cipher.encrypt("obj-2", b"study two")
    # Object 1's database row now points at object 2's blob.
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", two.blob, one.wrapped_key)
    # ... or at object 2's wrapped key.
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", one.blob, two.wrapped_key)


def test_error_messages_carry_no_key_material_or_content(cipher: EnvelopeCipher) -> None:
    secret = b"PLAINTEXTCANARY"
    sealed = cipher.encrypt("obj-1", secret)
    with pytest.raises(IntegrityError) as caught:
        cipher.decrypt("obj-1", flip(sealed.blob, len(sealed.blob) - 1), sealed.wrapped_key)
    message = str(caught.value)
    assert "PLAINTEXTCANARY" not in message
    assert MASTER_KEY.hex() not in message
    assert sealed.wrapped_key.ciphertext.hex() not in message


@pytest.mark.parametrize("object_id", ["", "x" * 1025])
def test_unusable_object_id_is_rejected(cipher: EnvelopeCipher, object_id: str) -> None:
    with pytest.raises(InvalidRequest):
        cipher.encrypt(object_id, b"data")


def test_sealed_repr_shows_no_content(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    assert sealed.wrapped_key.ciphertext.hex() not in repr(sealed)
    assert "bytes>" in repr(sealed)


# --- chunked (streaming) format ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 7 * CHUNK + 123])
def test_stream_round_trip_for_sizes_around_chunk_boundaries(cipher: EnvelopeCipher, size: int) -> None:
    plaintext = os.urandom(size)
    blob, wrapped = seal_stream(cipher, "obj-1", plaintext)
    assert len(blob) == blob_size(size, CHUNK) == HEADER + size + TAG_BYTES * max(1, -(-size // CHUNK))
    # The ciphertext arrives re-chunked arbitrarily, as from a blob store.
    for read_size in (1, 7, STEP, STEP + 1, len(blob)):
        assert b"".join(cipher.decrypt_stream("obj-1", pieces(blob, read_size), wrapped)) == plaintext
    assert cipher.decrypt("obj-1", blob, wrapped) == plaintext


def test_stream_yields_one_piece_per_chunk_after_the_header(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt_stream("obj-1", [os.urandom(2500)])
    out = list(sealed.chunks)
    assert [len(piece) for piece in out] == [HEADER, STEP, STEP, 500 + TAG_BYTES]


def test_stream_encryption_consumes_its_input_lazily(cipher: EnvelopeCipher) -> None:
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"z" * 100

    chunks = cipher.encrypt_stream("obj-1", source()).chunks
    assert pulled == 0
    next(chunks)  # header
    next(chunks)  # first chunk: needs just over one chunk of input
    assert pulled <= CHUNK // 100 + 1


def test_stream_decryption_releases_chunks_before_reading_everything(cipher: EnvelopeCipher) -> None:
    blob, wrapped = seal_stream(cipher, "obj-1", os.urandom(10 * CHUNK))
    served = 0

    def source() -> Iterator[bytes]:
        nonlocal served
        for piece in pieces(blob, 100):
            served += len(piece)
            yield piece

    plain = cipher.decrypt_stream("obj-1", source(), wrapped)
    assert len(next(plain)) == CHUNK
    assert served <= HEADER + 2 * STEP + 100


def test_one_shot_blob_can_be_read_as_a_stream(cipher: EnvelopeCipher) -> None:
    plaintext = os.urandom(5000)
    sealed = cipher.encrypt("obj-1", plaintext)
    assert b"".join(cipher.decrypt_stream("obj-1", pieces(bytes(sealed.blob), 64), sealed.wrapped_key)) == (
        plaintext
    )


def _chunks_of(blob: bytes) -> tuple[bytes, list[bytes]]:
    return blob[:HEADER], [blob[i : i + STEP] for i in range(HEADER, len(blob), STEP)]


def _drop_middle(blob: bytes) -> bytes:
    header, chunks = _chunks_of(blob)
    return header + b"".join(chunks[:1] + chunks[2:])


def _swap_first_two(blob: bytes) -> bytes:
    header, chunks = _chunks_of(blob)
    return header + b"".join([chunks[1], chunks[0], *chunks[2:]])


def _drop_final(blob: bytes) -> bytes:
    header, chunks = _chunks_of(blob)
    return header + b"".join(chunks[:-1])


def _repeat_final(blob: bytes) -> bytes:
    header, chunks = _chunks_of(blob)
    return header + b"".join([*chunks, chunks[-1]])


def _change_chunk_size(blob: bytes) -> bytes:
    changed = bytearray(blob)
    changed[9] ^= 0x01  # low byte of the chunk size field
    return bytes(changed)


STREAM_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "nonce prefix": lambda blob: flip(blob, 12),
    "chunk size": _change_chunk_size,
    "chunk size zero": lambda blob: blob[:6] + b"\x00\x00\x00\x00" + blob[10:],
    "first chunk body": lambda blob: flip(blob, HEADER + 3),
    "middle chunk tag": lambda blob: flip(blob, HEADER + 2 * STEP - 1),
    "final chunk": lambda blob: flip(blob, len(blob) - 1),
    "chunk dropped": _drop_middle,
    "chunks reordered": _swap_first_two,
    "truncated at a chunk boundary": _drop_final,
    "truncated inside a chunk": lambda blob: blob[:-5],
    "chunk appended": _repeat_final,
    "header only": lambda blob: blob[:HEADER],
    "half a header": lambda blob: blob[:8],
}


@pytest.mark.parametrize("tamper", STREAM_TAMPERING.values(), ids=STREAM_TAMPERING.keys())
def test_tampered_stream_raises_integrity_error(
    cipher: EnvelopeCipher, tamper: Callable[[bytes], bytes]
) -> None:
    plaintext = os.urandom(4 * CHUNK + 10)
    blob, wrapped = seal_stream(cipher, "obj-1", plaintext)
    bad = tamper(blob)
    with pytest.raises(IntegrityError):
        b"".join(cipher.decrypt_stream("obj-1", pieces(bad, 256), wrapped))
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", bad, wrapped)


def test_stream_under_another_object_id_is_rejected(cipher: EnvelopeCipher) -> None:
    blob, wrapped = seal_stream(cipher, "obj-1", os.urandom(3 * CHUNK))
    with pytest.raises(IntegrityError):
        b"".join(cipher.decrypt_stream("obj-2", [blob], wrapped))


def test_stream_stops_before_releasing_a_tampered_chunk(cipher: EnvelopeCipher) -> None:
    blob, wrapped = seal_stream(cipher, "obj-1", os.urandom(4 * CHUNK))
    bad = flip(blob, HEADER + STEP + 1)  # second chunk
    released = []
    with pytest.raises(IntegrityError):
        for piece in cipher.decrypt_stream("obj-1", [bad], wrapped):
            released.append(piece)
    assert len(released) == 1


def test_unknown_key_is_reported_when_decryption_starts(cipher: EnvelopeCipher) -> None:
    blob, wrapped = seal_stream(cipher, "obj-1", b"data")
    with pytest.raises(UnknownKey):
        cipher.decrypt_stream("obj-1", [blob], WrappedKey("local-9", wrapped.ciphertext))


# --- key ids, wrong keys and rotation ----------------------------------------------------


def test_wrapped_key_relabelled_with_another_kek_id_is_rejected(
    cipher: EnvelopeCipher, local_keys: LocalKeyProvider
) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    local_keys.rotate()
    relabelled = WrappedKey("local-2", sealed.wrapped_key.ciphertext)
    with pytest.raises(IntegrityError):
        cipher.decrypt("obj-1", sealed.blob, relabelled)


@pytest.mark.parametrize("key_id", ["local-9", "vault:irmsia:v1", "nonsense"])
def test_wrapped_key_naming_an_unknown_kek_raises_unknown_key(cipher: EnvelopeCipher, key_id: str) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    with pytest.raises(UnknownKey):
        cipher.decrypt("obj-1", sealed.blob, WrappedKey(key_id, sealed.wrapped_key.ciphertext))


def test_tampered_wrapped_key_is_rejected(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    wrapped = sealed.wrapped_key
    for bad in (flip(wrapped.ciphertext, 20), wrapped.ciphertext[:-1], b""):
        with pytest.raises(IntegrityError):
            cipher.decrypt("obj-1", sealed.blob, WrappedKey(wrapped.key_id, bad))


def test_wrong_master_key_cannot_decrypt(cipher: EnvelopeCipher, tmp_path: Path) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    stranger = EnvelopeCipher(LocalKeyProvider(OTHER_MASTER_KEY, tmp_path / "other.json"))
    with pytest.raises(IntegrityError):
        stranger.decrypt("obj-1", sealed.blob, sealed.wrapped_key)


def test_after_rotation_new_objects_use_the_new_kek_and_old_ones_still_decrypt(
    cipher: EnvelopeCipher, local_keys: LocalKeyProvider
) -> None:
    old = cipher.encrypt("obj-1", b"before rotation")
    assert old.wrapped_key.key_id == "local-1"
    new_id = local_keys.rotate()
    new = cipher.encrypt("obj-2", b"after rotation")
    assert new_id == "local-2"
    assert new.wrapped_key.key_id == "local-2"
    assert cipher.decrypt("obj-1", old.blob, old.wrapped_key) == b"before rotation"
    assert cipher.decrypt("obj-2", new.blob, new.wrapped_key) == b"after rotation"


def test_rewrap_moves_the_data_key_to_the_new_kek_without_touching_the_blob(
    cipher: EnvelopeCipher, local_keys: LocalKeyProvider
) -> None:
    sealed = cipher.encrypt("obj-1", b"kept as is")
    blob_before = bytes(sealed.blob)
    local_keys.rotate()
    rewrapped = cipher.rewrap(sealed.wrapped_key)
    assert rewrapped.key_id == "local-2"
    assert rewrapped.ciphertext != sealed.wrapped_key.ciphertext
    assert bytes(sealed.blob) == blob_before
    assert cipher.decrypt("obj-1", blob_before, rewrapped) == b"kept as is"


def test_rewrap_of_a_current_wrapped_key_changes_nothing(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt("obj-1", b"data")
    assert cipher.rewrap(sealed.wrapped_key) == sealed.wrapped_key


def test_invalid_chunk_size_is_rejected(local_keys: LocalKeyProvider) -> None:
    with pytest.raises(InvalidRequest):
        EnvelopeCipher(local_keys, chunk_size=0)
