"""The standalone verifier: receipts checked offline, and the module importable on its own."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irmsia.ledger import verifier
from irmsia.ledger.checkpoint import NoteSigner, make_checkpoint, sign_checkpoint
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.verifier import VerificationError, make_receipt, verify_receipt

ORIGIN = "irmsia.test/log"
LOG_KEY = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
ENTRIES = [f'{{"event":"ingest","object":"opaque-{i}"}}'.encode() for i in range(11)]


def _receipt(index: int = 6, signer: NoteSigner = LOG_KEY) -> dict[str, Any]:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(ENTRIES)
    note = sign_checkpoint(make_checkpoint(ORIGIN, tree.size, tree.root()), signer)
    text = make_receipt(ENTRIES[index], index, tree.inclusion_proof(index), note)
    body: dict[str, Any] = json.loads(text)
    return body


def test_receipt_verifies_offline_with_the_log_key() -> None:
    result = verify_receipt(json.dumps(_receipt()), LOG_KEY.verifier.to_string(), origin=ORIGIN)
    assert result.entry == ENTRIES[6]
    assert result.leaf_index == 6
    assert result.checkpoint.size == len(ENTRIES)


def test_receipt_accepts_bytes_and_parsed_json() -> None:
    receipt = _receipt(index=10)
    assert verify_receipt(json.dumps(receipt).encode(), LOG_KEY.verifier).leaf_index == 10
    assert verify_receipt(receipt, LOG_KEY.verifier).entry == ENTRIES[10]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entry", _b64(b'{"event":"ingest","object":"opaque-666"}')),
        ("leaf_index", 5),
        ("leaf_index", 11),
        ("leaf_index", -1),
        ("leaf_index", True),
        ("leaf_index", "6"),
        ("inclusion_proof", []),
        ("inclusion_proof", [_b64(bytes(32))] * 4),
        ("inclusion_proof", ["not base64!"]),
        ("inclusion_proof", "AAAA"),
        ("version", 2),
        ("entry", None),
        ("checkpoint", 7),
    ],
)
def test_tampered_receipt_is_rejected(field: str, value: object) -> None:
    receipt = _receipt()
    receipt[field] = value
    with pytest.raises(VerificationError):
        verify_receipt(receipt, LOG_KEY.verifier)


def test_receipt_with_checkpoint_rewritten_to_another_root_is_rejected() -> None:
    receipt = _receipt()
    original_root = receipt["checkpoint"].split("\n")[2]
    receipt["checkpoint"] = receipt["checkpoint"].replace(original_root, _b64(bytes(32)))
    with pytest.raises(VerificationError):
        verify_receipt(receipt, LOG_KEY.verifier)


def test_receipt_from_a_log_signed_by_another_key_is_rejected() -> None:
    other = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.from_private_bytes(bytes(32)))
    with pytest.raises(VerificationError):
        verify_receipt(_receipt(signer=other), LOG_KEY.verifier)


def test_receipt_for_another_origin_is_rejected() -> None:
    with pytest.raises(VerificationError):
        verify_receipt(_receipt(), LOG_KEY.verifier, origin="irmsia.test/other")


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", b"\xff\xfe", "{}"])
def test_non_receipt_input_is_rejected(payload: str | bytes) -> None:
    with pytest.raises(VerificationError):
        verify_receipt(payload, LOG_KEY.verifier)


def test_verifier_module_imports_alone_without_irmsia() -> None:
    # A third party copies verifier.py on its own: loading it must not pull in the irmsia package.
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('standalone_verifier', {verifier.__file__!r})\n"
        "module = sys.modules['standalone_verifier'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'irmsia'], 'irmsia was imported'\n"
        "print(module.leaf_hash(b'').hex())\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
