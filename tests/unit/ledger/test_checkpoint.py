"""Signed checkpoints and signed notes: the published vector, round trips, and forgeries refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irmsia.errors import CryptoError, InvalidRequest, ProofError
from irmsia.ledger.checkpoint import (
    NoteSigner,
    make_checkpoint,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from irmsia.ledger.verifier import (
    NoteVerifier,
    VerificationError,
    note_key_id,
    parse_note,
    verify_note,
)

ORIGIN = "irmsia.test/log"
ROOT = bytes(range(32))
SEED = bytes(range(100, 132))


def _signer(name: str = ORIGIN, seed: bytes = SEED) -> NoteSigner:
    return NoteSigner(name=name, private_key=Ed25519PrivateKey.from_private_bytes(seed))


def _signed(size: int = 7, extensions: tuple[str, ...] = ()) -> str:
    checkpoint = make_checkpoint(ORIGIN, size, ROOT, extensions=extensions)
    return sign_checkpoint(checkpoint, _signer())


def _flip_signature_bit(note: str) -> str:
    text, _, rest = note.partition("\n\n")
    prefix, b64 = rest.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return f"{text}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


# --- the golang.org/x/mod/sumdb/note vector ---------------------------------------------------


def _vector_note(tree8: dict[str, Any]) -> str:
    vector = tree8["signed_note_vector"]
    return f"{vector['text']}\n{vector['signature_line']}\n"


def test_published_signed_note_verifies(tree8: dict[str, Any]) -> None:
    vector = tree8["signed_note_vector"]
    verifier = NoteVerifier.from_string(vector["verifier_key"])
    assert verify_note(_vector_note(tree8), verifier) == vector["text"]
    assert open_note(_vector_note(tree8), verifier) == vector["text"]


def test_published_signed_note_with_a_flipped_bit_is_rejected(tree8: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_string(tree8["signed_note_vector"]["verifier_key"])
    with pytest.raises(VerificationError):
        verify_note(_flip_signature_bit(_vector_note(tree8)), verifier)
    altered_text = _vector_note(tree8).replace("cryptography", "cryptographY")
    with pytest.raises(ProofError):
        open_note(altered_text, verifier)


def test_published_signer_key_reproduces_the_published_signature(tree8: dict[str, Any]) -> None:
    vector = tree8["signed_note_vector"]
    signer = NoteSigner.from_string(vector["signer_key"])
    assert signer.verifier.to_string() == vector["verifier_key"]
    assert signer.signature_line(vector["text"]) == vector["signature_line"]  # Ed25519 is deterministic
    assert signer.to_string() == vector["signer_key"]


def test_key_id_is_first_four_bytes_of_name_newline_alg_key_hash(tree8: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_string(tree8["signed_note_vector"]["verifier_key"])
    assert note_key_id("PeterNeumann", verifier.public_key).hex() == "c74f20a3"


# --- checkpoints ------------------------------------------------------------------------------


def test_signed_checkpoint_round_trips() -> None:
    checkpoint = make_checkpoint(ORIGIN, 42, ROOT, time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    note = sign_checkpoint(checkpoint, _signer())
    assert note.startswith(f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\ntimestamp_ms 1735787045678\n\n")
    assert note.split("\n\n")[1].startswith(f"\u2014 {ORIGIN} ")
    opened = open_checkpoint(note, _signer().verifier.to_string(), origin=ORIGIN)
    assert opened == checkpoint
    assert (opened.size, opened.root_hash, opened.timestamp_ms) == (42, ROOT, 1735787045678)


def test_checkpoint_time_from_another_timezone_is_the_same_instant() -> None:
    here = datetime(2025, 1, 2, 4, 4, 5, 678000, tzinfo=timezone(timedelta(hours=1)))
    assert make_checkpoint(ORIGIN, 1, ROOT, time=here).timestamp_ms == 1735787045678


def test_naive_checkpoint_time_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        make_checkpoint(ORIGIN, 1, ROOT, time=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("two\nlines",)),
    ],
)
def test_checkpoint_that_would_not_parse_back_is_refused(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidRequest):
        make_checkpoint(origin, size, root, extensions=extensions)


def test_forged_checkpoint_signature_is_rejected() -> None:
    with pytest.raises(ProofError):
        open_checkpoint(_flip_signature_bit(_signed()), _signer().verifier)


def test_checkpoint_with_altered_size_is_rejected() -> None:
    with pytest.raises(ProofError):
        open_checkpoint(_signed(size=7).replace("\n7\n", "\n8\n", 1), _signer().verifier)


def test_checkpoint_signed_by_another_key_with_the_same_name_is_rejected() -> None:
    impostor = _signer(seed=bytes(32))
    note = sign_checkpoint(make_checkpoint(ORIGIN, 7, ROOT), impostor)
    with pytest.raises(ProofError, match="no signature"):
        open_checkpoint(note, _signer().verifier)


def test_checkpoint_is_rejected_under_a_different_key_name() -> None:
    renamed = _signer(name="other.log")
    with pytest.raises(ProofError):
        open_checkpoint(_signed(), renamed.verifier)


def test_signature_line_with_mismatched_key_id_is_rejected() -> None:
    note = _signed()
    text, _, rest = note.partition("\n\n")
    prefix, b64 = rest.rstrip("\n").rsplit(" ", 1)
    raw = base64.b64decode(b64)
    wrong_id = bytes([raw[0] ^ 0xFF]) + raw[1:]
    forged = f"{text}\n\n{prefix} {base64.b64encode(wrong_id).decode()}\n"
    with pytest.raises(ProofError):
        open_checkpoint(forged, _signer().verifier)


def test_checkpoint_for_another_origin_is_rejected() -> None:
    with pytest.raises(ProofError, match="different log"):
        open_checkpoint(_signed(), _signer().verifier, origin="irmsia.test/other")


def test_cosignatures_by_other_keys_are_ignored() -> None:
    witness = _signer(name="witness.example", seed=bytes(range(32)))
    text = make_checkpoint(ORIGIN, 3, ROOT).to_text()
    note = sign_note(text, [witness, _signer()])
    assert open_checkpoint(note, _signer().verifier).size == 3
    assert open_checkpoint(note, witness.verifier).size == 3
    assert len(parse_note(note).signatures) == 2


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda n: n.replace("\n\n", "\n", 1), id="no-blank-line"),
        pytest.param(lambda n: n.rstrip("\n"), id="no-final-newline"),
        pytest.param(lambda n: n.replace("\u2014 ", "- ", 1), id="not-an-em-dash"),
        pytest.param(lambda n: n.replace("\n\n", "\n\n\u2014 nameonly\n", 1), id="line-without-signature"),
        pytest.param(lambda n: n.replace("\n\n", "\n\n\u2014 x AAAA\n", 1), id="signature-too-short"),
        pytest.param(lambda n: n[:-3] + "!!\n", id="bad-base64"),
        pytest.param(lambda n: n.replace("\n7\n", "\n07\n", 1), id="size-leading-zero"),
        pytest.param(lambda n: n.replace("\n7\n", "\n+7\n", 1), id="size-with-sign"),
        pytest.param(lambda n: n.replace(ORIGIN, ORIGIN + "\t", 1), id="control-character"),
        pytest.param(lambda n: n.split("\n", 1)[1], id="missing-origin-line"),
        pytest.param(lambda n: n.replace("\n\n", "\n\n\n", 1), id="empty-signature-line"),
        pytest.param(lambda n: n.encode("utf-8").replace(b"7", b"\xff", 1), id="not-utf8"),
        pytest.param(lambda n: n + "\u2014 x " + "A" * (1 << 20) + "\n", id="too-large"),
    ],
)
def test_malformed_checkpoint_notes_are_rejected(mangle: Any) -> None:
    with pytest.raises(ProofError):
        open_checkpoint(mangle(_signed()), _signer().verifier)


def test_root_hash_with_non_canonical_base64_is_rejected() -> None:
    # Padding bits set: decodes to the same bytes, but the signed text must have one spelling.
    canonical = base64.b64encode(ROOT).decode()
    variant = canonical[:-2] + chr(ord(canonical[-2]) + 1) + "="
    assert base64.b64decode(variant) == ROOT
    text = f"{ORIGIN}\n7\n{variant}\n"
    with pytest.raises(ProofError):
        open_checkpoint(sign_note(text, [_signer()]), _signer().verifier)


# --- keys -------------------------------------------------------------------------------------


def test_generated_signer_round_trips_through_its_key_strings() -> None:
    signer = NoteSigner.generate(ORIGIN)
    again = NoteSigner.from_string(signer.to_string())
    assert again.public_key == signer.public_key
    assert NoteVerifier.from_string(signer.verifier.to_string()) == signer.verifier
    assert repr(signer).count("PRIVATE") == 0


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
    ids=[
        "too-few-parts",
        "wrong-key-id",
        "uppercase-key-id",
        "wrong-algorithm",
        "short-key",
        "space",
        "no-name",
    ],
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(VerificationError):
        NoteVerifier.from_string(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD",
    ],
    ids=["no-prefix", "wrong-key-id", "truncated"],
)
def test_malformed_signer_keys_are_rejected_without_echoing_them(skey: str) -> None:
    with pytest.raises(CryptoError) as caught:
        NoteSigner.from_string(skey)
    assert "AYEK" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "no newline", "a\n\nb\n", "tab\there\n"])
def test_unsignable_note_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        sign_note(text, [_signer()])


def test_note_needs_a_signer() -> None:
    with pytest.raises(InvalidRequest):
        sign_note("text\n", [])
