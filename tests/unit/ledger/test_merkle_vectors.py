"""The tree and verifier against published reference vectors (transparency-dev/merkle, MTC draft)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from irmsia.ledger.merkle import EMPTY_ROOT, MerkleTree, is_valid_subtree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.verifier import (
    VerificationError,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "merkle"
INCLUSION_PROBES = sorted((DATA / "inclusion").rglob("*.json"))
CONSISTENCY_PROBES = sorted((DATA / "consistency").rglob("*.json"))


def _probe_id(path: Path) -> str:
    return str(path.relative_to(DATA))


def _load(path: Path) -> dict[str, Any]:
    probe: dict[str, Any] = json.loads(path.read_text())
    return probe


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(raw: list[str] | None) -> list[bytes]:
    return [] if raw is None else [_b64(item) for item in raw]


def _reference_tree(tree8: dict[str, Any]) -> MerkleTree:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(bytes.fromhex(x) for x in tree8["leaf_inputs_hex"])
    return tree


def test_every_published_probe_file_is_present() -> None:
    # 98 + 98 = the 196 probe files of the reference; a lost copy must not shrink the suite silently.
    assert len(INCLUSION_PROBES) == 98
    assert len(CONSISTENCY_PROBES) == 98
    outcomes = [_load(p)["wantErr"] for p in INCLUSION_PROBES + CONSISTENCY_PROBES]
    assert outcomes.count(False) == 12  # the happy paths; every other probe is a corruption


@pytest.mark.parametrize("path", INCLUSION_PROBES, ids=_probe_id)
def test_inclusion_probe_is_accepted_or_rejected_as_published(path: Path) -> None:
    probe = _load(path)
    args = (_b64(probe["leafHash"]), probe["leafIdx"], probe["treeSize"], _proof(probe["proof"]))
    root = _b64(probe["root"])
    if probe["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args, root)
    else:
        verify_inclusion(*args, root)
        assert root_from_inclusion_proof(*args) == root


@pytest.mark.parametrize("path", CONSISTENCY_PROBES, ids=_probe_id)
def test_consistency_probe_is_accepted_or_rejected_as_published(path: Path) -> None:
    probe = _load(path)
    args = (
        probe["size1"],
        probe["size2"],
        _proof(probe["proof"]),
        _b64(probe["root1"]),
        _b64(probe["root2"]),
    )
    if probe["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_roots_match_reference_while_appending_one_by_one(tree8: dict[str, Any]) -> None:
    tree = MerkleTree(MemoryNodeStore())
    assert tree.root().hex() == tree8["root_hashes_by_size"][0]
    for size, leaf in enumerate(tree8["leaf_inputs_hex"], start=1):
        tree.append(bytes.fromhex(leaf))
        assert tree.root().hex() == tree8["root_hashes_by_size"][size]


def test_historical_roots_match_reference_after_batch_append(tree8: dict[str, Any]) -> None:
    tree = _reference_tree(tree8)
    assert [tree.root(n).hex() for n in range(9)] == tree8["root_hashes_by_size"]
    assert tree.root(0) == EMPTY_ROOT


@pytest.mark.parametrize("kind", ["inclusion", "consistency"])
def test_generated_proofs_equal_published_happy_path_proofs(tree8: dict[str, Any], kind: str) -> None:
    tree = _reference_tree(tree8)
    roots = [bytes.fromhex(h) for h in tree8["root_hashes_by_size"]]
    happy = [_load(p) for p in (DATA / kind).glob("[0-9]/happy-path.json")]
    assert len(happy) == 5
    for probe in happy:
        if kind == "inclusion":
            assert _b64(probe["root"]) == roots[probe["treeSize"]]
            assert tree.leaf_hash_at(probe["leafIdx"]) == _b64(probe["leafHash"])
            assert tree.inclusion_proof(probe["leafIdx"], probe["treeSize"]) == _proof(probe["proof"])
        else:
            assert _b64(probe["root2"]) == roots[probe["size2"]]
            generated = tree.consistency_proof(probe["size1"], probe["size2"])
            assert generated == _proof(probe["proof"])


def test_every_proof_of_the_reference_tree_verifies_against_reference_roots(tree8: dict[str, Any]) -> None:
    tree = _reference_tree(tree8)
    roots = [bytes.fromhex(h) for h in tree8["root_hashes_by_size"]]
    for size in range(1, 9):
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(tree.leaf_hash_at(index), index, size, proof, roots[size])
        for size1 in range(1, size + 1):
            verify_consistency(size1, size, tree.consistency_proof(size1, size), roots[size1], roots[size])


def _rolling_tree() -> MerkleTree:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(bytes([i]) for i in range(130))
    return tree


def test_subtree_hashes_of_130_leaf_tree_match_rolling_constant(tree8: dict[str, Any]) -> None:
    tree = _rolling_tree()
    digest = hashlib.sha256()
    for end in range(131):
        for start in range(end + 1):
            if start == end:
                # The published constant counts every empty range [s, s) as a subtree whose
                # hash is MTH({}) = SHA-256(""); the log itself never serves empty subtrees.
                digest.update(f"[{start}, {end}) {EMPTY_ROOT.hex()}\n".encode())
            elif is_valid_subtree(start, end):
                digest.update(f"[{start}, {end}) {tree.subtree_hash(start, end).hex()}\n".encode())
    assert digest.hexdigest() == tree8["subtree_vectors"]["subtree_hash_lines_sha256"]


def test_subtree_inclusion_proofs_of_130_leaf_tree_match_rolling_constant(tree8: dict[str, Any]) -> None:
    tree = _rolling_tree()
    digest = hashlib.sha256()
    for end in range(131):
        for start in range(end):
            if not is_valid_subtree(start, end):
                continue
            for index in range(start, end):
                proof = tree.subtree_inclusion_proof(index, start, end)
                line = f"{index} [{start}, {end})" + "".join(f" {h.hex()}" for h in proof)
                digest.update(f"{line}\n".encode())
    assert digest.hexdigest() == tree8["subtree_vectors"]["subtree_inclusion_proof_lines_sha256"]


def test_subtree_validity_follows_alignment_rule() -> None:
    assert is_valid_subtree(0, 1)
    assert is_valid_subtree(4, 8)
    assert is_valid_subtree(8, 13)
    assert is_valid_subtree(0, 13)
    assert not is_valid_subtree(2, 6)
    assert not is_valid_subtree(4, 4)
    assert not is_valid_subtree(5, 4)
