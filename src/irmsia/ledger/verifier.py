"""Offline verification of IRMSIA ledger proofs, checkpoints and receipts, for anyone.

This module depends only on the Python standard library and ``cryptography``; it imports
nothing else from IRMSIA, so a third party can copy this one file and check IRMSIA's claims
without trusting the platform. Every check raises ``VerificationError`` on failure and
returns normally (with the parsed data) on success.

Hashing (RFC 9162 §2.1): leaf ``SHA-256(0x00 || entry)``, node ``SHA-256(0x01 || l || r)``.

Checkpoint (C2SP tlog-checkpoint), a signed note whose text is::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]        e.g. "timestamp_ms 1735689600000"

followed by a blank line and one line per signature ``— <key name> <base64(key id || sig)>``
(C2SP signed-note; Ed25519 over the text bytes; key id = first 4 bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)``). The log's public key is published as a
verifier key string ``<key name>+<8 hex key id>+<base64(0x01 || 32-byte public key)>``.

Receipt: the JSON object IRMSIA hands out when it records an entry::

    {
      "version": 1,
      "entry": "<base64 of the canonical entry bytes that were hashed into the leaf>",
      "leaf_index": 42,
      "inclusion_proof": ["<base64 32-byte hash>", ...],
      "checkpoint": "<the signed checkpoint note, verbatim>"
    }

To check one, obtain the log's verifier key out of band (not from the receipt), then::

    from verifier import verify_receipt
    result = verify_receipt(receipt_json, "irmsia.example+1a2b3c4d+AT...")
    result.entry, result.leaf_index, result.checkpoint.size, result.checkpoint.root_hash

This proves that the log whose key signed the checkpoint committed ``entry`` at ``leaf_index``
in its tree of ``checkpoint.size`` leaves. To see that the log never rewrote history, keep the
checkpoints you have seen and check each newer one against an older one with
``verify_consistency`` and a consistency proof fetched from the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
RECEIPT_VERSION = 1
TIMESTAMP_EXTENSION = "timestamp_ms"
"""Extension line keyword IRMSIA uses for the checkpoint time, in Unix milliseconds."""

ED25519_ALGORITHM = 0x01
"""Signed-note signature type byte for Ed25519."""

MAX_NOTE_SIZE = 1 << 20
MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "  # an em dash and a space open every signature line

# Defined again here (not imported from irmsia.ledger.merkle) so this file stands alone.
_sha256 = hashlib.sha256


class VerificationError(Exception):
    """A proof, checkpoint, note or receipt did not verify, or was malformed."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash of an entry's canonical bytes."""
    return _sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for item in proof:
        if len(item) != HASH_SIZE:
            raise VerificationError("proof element is not a 32-byte hash")


def root_from_inclusion_proof(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-4).

    Raises ``VerificationError`` when ``index`` is not below ``tree_size``, ``leaf`` or a proof
    element is not 32 bytes, or the proof has the wrong length for that position.
    """
    if not 0 <= index < tree_size:
        raise VerificationError("leaf index is not below the tree size")
    if len(leaf) != HASH_SIZE:
        raise VerificationError("leaf hash is not 32 bytes")
    _check_proof_hashes(proof)
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                # Right edge of a smaller tree: skip the levels where this node has no sibling.
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is too short")
    return r


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``tree_size`` with ``root``."""
    computed = root_from_inclusion_proof(leaf, index, tree_size, proof)
    if len(root) != HASH_SIZE or not hmac.compare_digest(computed, root):
        raise VerificationError("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree ``(size1, root1)`` is a prefix of ``(size2, root2)`` (RFC 9162 §2.1.4.2).

    Equal sizes need an empty proof and equal roots. A size of 0 is refused: nothing can be
    learnt from it, and accepting it would let any root pass as "consistent".
    """
    if size1 <= 0 or size2 < size1:
        raise VerificationError("consistency needs 0 < size1 <= size2")
    if size1 == size2:
        if proof:
            raise VerificationError("consistency proof between equal sizes must be empty")
        if not hmac.compare_digest(root1, root2):
            raise VerificationError("roots differ for the same tree size")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    _check_proof_hashes(proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # Tree 1 is a complete subtree of tree 2, so its root is the starting node itself.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is too short")
    if not hmac.compare_digest(fr, root1) or not hmac.compare_digest(sr, root2):
        raise VerificationError("consistency proof does not match the roots")


# --- signed notes (C2SP signed-note) -------------------------------------------------------


def _valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def note_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key id of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || key)[:4]``."""
    return _sha256(name.encode() + b"\n" + bytes([ED25519_ALGORITHM]) + public_key).digest()[:4]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise VerificationError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, 4-byte key id and raw 32-byte public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>``; raises ``VerificationError``."""
        # maxsplit: the base64 key may itself contain '+'; names and key ids cannot.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise VerificationError("verifier key must be name+keyid+key")
        name, hex_id, b64_key = parts
        if not _valid_key_name(name):
            raise VerificationError("verifier key name is invalid")
        if len(hex_id) != 8 or hex_id != hex_id.lower():
            raise VerificationError("verifier key id must be 8 lowercase hex digits")
        try:
            key_id = bytes.fromhex(hex_id)
        except ValueError:
            raise VerificationError("verifier key id must be 8 lowercase hex digits") from None
        raw = _b64decode(b64_key, "verifier key")
        if len(raw) != 1 + 32 or raw[0] != ED25519_ALGORITHM:
            raise VerificationError("verifier key is not an Ed25519 note key")
        public_key = raw[1:]
        if note_key_id(name, public_key) != key_id:
            raise VerificationError("verifier key id does not match its key")
        return cls(name=name, key_id=key_id, public_key=public_key)

    def to_string(self) -> str:
        """The verifier key string that :meth:`from_string` reads."""
        encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: key name, 4-byte key id, and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedNote:
    """A parsed, *unverified* note: its text (ending in a newline) and signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]


def parse_note(note: str | bytes) -> SignedNote:
    """Split a signed note into text and signature lines without checking any signature.

    Raises ``VerificationError`` when the note is malformed (not UTF-8, control characters,
    no blank line before the signatures, a malformed signature line, too large).
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_SIZE:
            raise VerificationError("note is too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("note is not valid UTF-8") from None
    if len(note) > MAX_NOTE_SIZE:
        raise VerificationError("note is too large")
    if any(ch < " " and ch != "\n" for ch in note):
        raise VerificationError("note contains control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("note has no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise VerificationError("note does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError("note has too many signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise VerificationError("note signature line is malformed")
        name, sep, b64 = line[len(_SIG_PREFIX) :].rpartition(" ")
        if not sep or not _valid_key_name(name):
            raise VerificationError("note signature line is malformed")
        raw = _b64decode(b64, "note signature")
        if len(raw) < 5:
            raise VerificationError("note signature is too short")
        signatures.append(NoteSignature(name=name, key_id=raw[:4], signature=raw[4:]))
    return SignedNote(text=text, signatures=tuple(signatures))


def verify_note(note: str | bytes, verifier: NoteVerifier) -> str:
    """Check that ``verifier`` signed ``note``; returns the note text.

    Signatures by other keys (e.g. witnesses' cosignatures) are ignored, as the signed-note
    spec asks. Raises ``VerificationError`` when no line carries this key's name and key id,
    or when such a line's signature is wrong.
    """
    parsed = parse_note(note)
    message = parsed.text.encode("utf-8")
    found = False
    for sig in parsed.signatures:
        if sig.name != verifier.name or not hmac.compare_digest(sig.key_id, verifier.key_id):
            continue
        if not verifier.verify(message, sig.signature):
            raise VerificationError(f"note signature by key {verifier.name!r} is invalid")
        found = True
    if not found:
        raise VerificationError(f"note carries no signature by key {verifier.name!r}")
    return parsed.text


# --- checkpoints (C2SP tlog-checkpoint) ------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin (log identity), tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The checkpoint body, the text a signature covers (ends in a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @property
    def timestamp_ms(self) -> int | None:
        """The ``timestamp_ms`` extension as Unix milliseconds, or None when absent."""
        for line in self.extensions:
            keyword, _, value = line.partition(" ")
            if keyword == TIMESTAMP_EXTENSION and value.isascii() and value.isdigit():
                return int(value)
        return None


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (the note text); raises ``VerificationError`` when malformed."""
    if not text.endswith("\n"):
        raise VerificationError("checkpoint does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint needs origin, size and root lines")
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise VerificationError("checkpoint origin is empty")
    if not (size_line.isascii() and size_line.isdigit()) or (size_line != "0" and size_line[0] == "0"):
        raise VerificationError("checkpoint size is not a canonical decimal")
    root_hash = _b64decode(root_line, "checkpoint root hash")
    # Refuse non-canonical encodings so one tree head has exactly one text.
    if len(root_hash) != HASH_SIZE or base64.b64encode(root_hash).decode() != root_line:
        raise VerificationError("checkpoint root hash is malformed")
    if any(not line for line in extensions):
        raise VerificationError("checkpoint has an empty extension line")
    return Checkpoint(origin=origin, size=int(size_line), root_hash=root_hash, extensions=tuple(extensions))


def verify_checkpoint(
    note: str | bytes, verifier: NoteVerifier | str, *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint with a trusted key and return it.

    ``verifier`` is a ``NoteVerifier`` or a verifier key string. When ``origin`` is given the
    checkpoint must name that log. Raises ``VerificationError``.
    """
    if isinstance(verifier, str):
        verifier = NoteVerifier.from_string(verifier)
    checkpoint = parse_checkpoint(verify_note(note, verifier))
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError("checkpoint is for a different log")
    return checkpoint


# --- receipts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a verified receipt proves: ``entry`` sits at ``leaf_index`` under ``checkpoint``."""

    entry: bytes
    leaf_index: int
    inclusion_proof: tuple[bytes, ...]
    checkpoint: Checkpoint


def make_receipt(
    entry: bytes, leaf_index: int, inclusion_proof: Sequence[bytes], checkpoint_note: str
) -> str:
    """Encode a receipt as the JSON text documented above (no check is made here)."""
    body = {
        "version": RECEIPT_VERSION,
        "entry": base64.b64encode(entry).decode(),
        "leaf_index": leaf_index,
        "inclusion_proof": [base64.b64encode(h).decode() for h in inclusion_proof],
        "checkpoint": checkpoint_note,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _field(receipt: Mapping[str, Any], name: str, kind: type) -> Any:
    value = receipt.get(name)
    # bool is an int in Python; a JSON true must not pass as a leaf index.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise VerificationError(f"receipt field {name!r} is missing or has the wrong type")
    return value


def verify_receipt(
    receipt_json: str | bytes | Mapping[str, Any],
    trusted_public_key: NoteVerifier | str,
    *,
    origin: str | None = None,
) -> VerifiedReceipt:
    """Check a receipt fully offline against the log's trusted verifier key.

    Verifies the checkpoint signature, then that the entry's leaf hash is included at
    ``leaf_index`` in the checkpoint's tree. Raises ``VerificationError`` on any failure.
    """
    if isinstance(receipt_json, Mapping):
        receipt: Any = receipt_json
    else:
        try:
            receipt = json.loads(receipt_json)
        except (ValueError, UnicodeDecodeError):
            raise VerificationError("receipt is not valid JSON") from None
    if not isinstance(receipt, Mapping):
        raise VerificationError("receipt is not a JSON object")
    if _field(receipt, "version", int) != RECEIPT_VERSION:
        raise VerificationError("receipt version is not supported")
    entry = _b64decode(_field(receipt, "entry", str), "receipt entry")
    leaf_index = _field(receipt, "leaf_index", int)
    raw_proof = _field(receipt, "inclusion_proof", list)
    if not all(isinstance(item, str) for item in raw_proof):
        raise VerificationError("receipt inclusion proof must be a list of base64 strings")
    proof = tuple(_b64decode(item, "receipt proof element") for item in raw_proof)
    checkpoint = verify_checkpoint(_field(receipt, "checkpoint", str), trusted_public_key, origin=origin)
    verify_inclusion(leaf_hash(entry), leaf_index, checkpoint.size, proof, checkpoint.root_hash)
    return VerifiedReceipt(entry=entry, leaf_index=leaf_index, inclusion_proof=proof, checkpoint=checkpoint)
