"""Signed checkpoints: the log's Ed25519 signature over its tree head (C2SP tlog-checkpoint).

The format, parsing and verification live in ``irmsia.ledger.verifier`` so that third parties
verify with exactly the code IRMSIA uses; this module adds the signing side and maps
verification failures onto IRMSIA's error tree (``ProofError``). It reads no clock: the
caller passes the checkpoint time, which is recorded as a ``timestamp_ms`` extension line.

A signer key string, ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>``, is
secret key material: keep it in the key provider, never in logs or error messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from irmsia.errors import CryptoError, InvalidRequest, ProofError
from irmsia.ledger.verifier import (
    ED25519_ALGORITHM,
    TIMESTAMP_EXTENSION,
    Checkpoint,
    NoteVerifier,
    VerificationError,
    note_key_id,
    parse_checkpoint,
    verify_checkpoint,
    verify_note,
)

__all__ = [
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "make_checkpoint",
    "open_checkpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
]

_SIGNER_PREFIX = "PRIVATE+KEY+"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 signed-note key: signs note texts, and exposes its public verifier."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not _valid_key_name(self.name):
            raise InvalidRequest("a note key name must be non-empty, without spaces or '+'")

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A fresh random key named ``name`` (the log's origin, by convention)."""
        return cls(name=name, private_key=Ed25519PrivateKey.generate())

    @classmethod
    def from_string(cls, skey: str) -> NoteSigner:
        """Parse a ``PRIVATE+KEY+...`` signer key string; raises ``CryptoError`` if malformed."""
        # Messages here never echo the input: it is secret key material.
        if not skey.startswith(_SIGNER_PREFIX):
            raise CryptoError("not a signed-note signer key")
        # maxsplit: the base64 seed may itself contain '+'; names and key ids cannot.
        parts = skey[len(_SIGNER_PREFIX) :].split("+", 2)
        if len(parts) != 3 or not _valid_key_name(parts[0]):
            raise CryptoError("signer key must be PRIVATE+KEY+name+keyid+key")
        name, hex_id, b64_key = parts
        try:
            raw = base64.b64decode(b64_key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise CryptoError("signer key is not valid base64") from None
        if len(raw) != 1 + 32 or raw[0] != ED25519_ALGORITHM:
            raise CryptoError("signer key is not an Ed25519 note key")
        signer = cls(name=name, private_key=Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != hex_id:
            raise CryptoError("signer key id does not match its key")
        return signer

    def to_string(self) -> str:
        """The secret signer key string that :meth:`from_string` reads."""
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + seed).decode()
        return f"{_SIGNER_PREFIX}{self.name}+{self.key_id.hex()}+{encoded}"

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        """The 4-byte signed-note key id."""
        return note_key_id(self.name, self.public_key)

    @property
    def verifier(self) -> NoteVerifier:
        """The public half, to publish as ``verifier.to_string()``."""
        return NoteVerifier(name=self.name, key_id=self.key_id, public_key=self.public_key)

    def signature_line(self, text: str) -> str:
        """The ``— <name> <base64(key id || signature)>`` line for ``text`` (no newline)."""
        signature = self.private_key.sign(text.encode("utf-8"))
        return f"\u2014 {self.name} {base64.b64encode(self.key_id + signature).decode()}"


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """A signed note: ``text``, a blank line, then one signature line per signer.

    ``text`` must be non-empty, end in a newline, have no blank line and no control characters
    other than newlines; raises ``InvalidRequest`` otherwise or when ``signers`` is empty.
    """
    if not signers:
        raise InvalidRequest("a note needs at least one signer")
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise InvalidRequest("note text must be non-empty lines, each ending in a newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise InvalidRequest("note text must not contain control characters")
    return text + "\n" + "".join(signer.signature_line(text) + "\n" for signer in signers)


def make_checkpoint(
    origin: str,
    size: int,
    root_hash: bytes,
    *,
    time: datetime | None = None,
    extensions: Sequence[str] = (),
) -> Checkpoint:
    """A validated checkpoint; ``time`` (timezone-aware) becomes a ``timestamp_ms`` extension line.

    Raises ``InvalidRequest`` when the result would not parse back identically.
    """
    lines = list(extensions)
    if time is not None:
        if time.tzinfo is None:
            raise InvalidRequest("checkpoint time must be timezone-aware")
        # Integer arithmetic on timedelta: a float timestamp could be off by a millisecond.
        millis = (time - _EPOCH) // timedelta(milliseconds=1)
        lines.insert(0, f"{TIMESTAMP_EXTENSION} {millis}")
    checkpoint = Checkpoint(origin=origin, size=size, root_hash=root_hash, extensions=tuple(lines))
    try:
        reparsed = parse_checkpoint(checkpoint.to_text())
    except VerificationError as exc:
        raise InvalidRequest(f"invalid checkpoint: {exc}") from None
    if reparsed != checkpoint:
        raise InvalidRequest("invalid checkpoint: a field contains a newline")
    return checkpoint


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed-note text of ``checkpoint`` signed by ``signer``."""
    return sign_note(checkpoint.to_text(), [signer])


def open_note(note: str | bytes, verifier: NoteVerifier) -> str:
    """Verify a note signed by ``verifier``; returns its text. Raises ``ProofError``."""
    try:
        return verify_note(note, verifier)
    except VerificationError as exc:
        raise ProofError(str(exc)) from None


def open_checkpoint(
    note: str | bytes, verifier: NoteVerifier | str, *, origin: str | None = None
) -> Checkpoint:
    """Verify and parse a signed checkpoint; raises ``ProofError`` (forged, wrong key, malformed)."""
    try:
        return verify_checkpoint(note, verifier, origin=origin)
    except VerificationError as exc:
        raise ProofError(str(exc)) from None
