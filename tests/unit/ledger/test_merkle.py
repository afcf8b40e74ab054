"""Behaviour of the append-only tree and its node store: appends, reopening, bounds, reads."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from irmsia.errors import Conflict, InvalidRequest, LedgerError
from irmsia.ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, node_hash
from irmsia.ledger.nodestore import MemoryNodeStore, Node, NodeKey
from irmsia.ledger.verifier import verify_consistency, verify_inclusion


def _entries(count: int, start: int = 0) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(start, start + count)]


def _naive_root(leaves: Sequence[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursing over the leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


class CountingStore(MemoryNodeStore):
    """Counts reads so tests can pin the O(log n) read bound; can be told to fail writes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail_writes = False

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        self.batches.append(len(keys))
        return super().get_nodes(keys)

    def append_nodes(self, old_size: int, new_size: int, nodes: Sequence[Node]) -> None:
        if self.fail_writes:
            raise LedgerError("simulated write failure")
        super().append_nodes(old_size, new_size, nodes)


def test_empty_tree_root_is_sha256_of_empty_string() -> None:
    tree = MerkleTree(MemoryNodeStore())
    assert tree.size == 0
    assert tree.root() == hashlib.sha256(b"").digest()


def test_hashes_use_rfc9162_domain_separation() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"L", b"R") == hashlib.sha256(b"\x01LR").digest()


def test_appends_return_consecutive_leaf_indices() -> None:
    tree = MerkleTree(MemoryNodeStore())
    assert tree.append(b"a") == 0
    assert tree.append_many(_entries(5)) == 1
    assert tree.append_many([]) == 6
    assert tree.append(b"b") == 6
    assert tree.size == 7


def test_single_and_batched_appends_build_the_same_tree() -> None:
    one_by_one, batched = MerkleTree(MemoryNodeStore()), MerkleTree(MemoryNodeStore())
    for entry in _entries(77):
        one_by_one.append(entry)
    batched.append_many(_entries(30))
    batched.append_many(_entries(47, start=30))
    assert [one_by_one.root(n) for n in range(78)] == [batched.root(n) for n in range(78)]
    assert one_by_one.inclusion_proof(40) == batched.inclusion_proof(40)


def test_roots_equal_naive_recursive_mth_at_every_size() -> None:
    entries = _entries(70)
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(entries)
    leaves = [leaf_hash(e) for e in entries]
    for size in range(71):
        assert tree.root(size) == _naive_root(leaves[:size])


def test_reopened_tree_serves_identical_roots_and_proofs() -> None:
    store = MemoryNodeStore()
    original = MerkleTree(store)
    original.append_many(_entries(45))
    reopened = MerkleTree(store)
    assert reopened.size == 45
    assert reopened.root() == original.root()
    for size in range(1, 46):
        assert reopened.root(size) == original.root(size)
        assert reopened.consistency_proof(size) == original.consistency_proof(size)
        assert reopened.inclusion_proof(size - 1) == original.inclusion_proof(size - 1)
    # And it keeps growing from where the store left off.
    reopened.append_many(_entries(5, start=45))
    original.reload()
    assert original.root() == reopened.root()


def test_index_or_size_outside_the_tree_is_refused() -> None:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(_entries(4))
    with pytest.raises(InvalidRequest):
        tree.inclusion_proof(4)
    with pytest.raises(InvalidRequest):
        tree.inclusion_proof(-1)
    with pytest.raises(InvalidRequest):
        tree.inclusion_proof(0, 5)
    with pytest.raises(InvalidRequest):
        tree.root(5)
    with pytest.raises(InvalidRequest):
        tree.consistency_proof(0, 4)
    with pytest.raises(InvalidRequest):
        tree.consistency_proof(3, 2)
    with pytest.raises(InvalidRequest):
        tree.subtree_hash(2, 6)


def test_consistency_proof_between_equal_sizes_is_empty() -> None:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(_entries(6))
    assert tree.consistency_proof(6, 6) == []
    verify_consistency(6, 6, [], tree.root(6), tree.root(6))


def test_leaf_hash_of_wrong_length_is_refused() -> None:
    tree = MerkleTree(MemoryNodeStore())
    with pytest.raises(InvalidRequest):
        tree.append_leaf_hashes([b"short"])
    assert tree.size == 0


def test_second_writer_on_a_stale_size_gets_conflict_and_recovers_after_reload() -> None:
    store = MemoryNodeStore()
    first, second = MerkleTree(store), MerkleTree(store)
    first.append(b"a")
    with pytest.raises(Conflict):
        second.append(b"b")
    assert second.size == 0
    second.reload()
    assert second.append(b"b") == 1
    assert MerkleTree(store).root() == _naive_root([leaf_hash(b"a"), leaf_hash(b"b")])


def test_failed_store_write_leaves_the_tree_unchanged() -> None:
    store = CountingStore()
    tree = MerkleTree(store)
    tree.append_many(_entries(3))
    root = tree.root()
    store.fail_writes = True
    with pytest.raises(LedgerError):
        tree.append_many(_entries(9, start=3))
    assert (tree.size, tree.root()) == (3, root)
    store.fail_writes = False
    tree.append_many(_entries(9, start=3))
    assert tree.root() == _naive_root([leaf_hash(e) for e in _entries(12)])


def test_appending_reads_nothing_and_proofs_read_one_small_batch() -> None:
    store = CountingStore()
    tree = MerkleTree(store)
    store.batches.clear()
    tree.append_many(_entries(5000))
    for entry in _entries(10, start=5000):
        tree.append(entry)
    assert store.batches == []
    size = tree.size  # 5010: log2 ~ 12.3
    for index in (0, 1, 2500, 4095, 4096, size - 1):
        store.batches.clear()
        tree.inclusion_proof(index)
        assert len(store.batches) == 1 and store.batches[0] <= 2 * 13
    for size1 in (1, 3, 4096, 4097, size - 1):
        store.batches.clear()
        tree.consistency_proof(size1)
        assert len(store.batches) == 1 and store.batches[0] <= 2 * 13 + 1
    store.batches.clear()
    tree.root(4999)
    assert store.batches == [bin(4999).count("1")]


def test_reopening_reads_only_the_peaks() -> None:
    store = CountingStore()
    MerkleTree(store).append_many(_entries(1000))
    store.batches.clear()
    MerkleTree(store)
    assert store.batches == [bin(1000).count("1")]


def test_proofs_at_historical_sizes_verify() -> None:
    tree = MerkleTree(MemoryNodeStore())
    tree.append_many(_entries(100))
    proof = tree.inclusion_proof(17, 33)
    verify_inclusion(leaf_hash(b"entry-17"), 17, 33, proof, tree.root(33))
    verify_consistency(33, 100, tree.consistency_proof(33, 100), tree.root(33), tree.root())


def test_memory_store_refuses_stale_size_and_out_of_order_nodes() -> None:
    store = MemoryNodeStore()
    with pytest.raises(Conflict):
        store.append_nodes(1, 2, [])
    with pytest.raises(LedgerError):
        store.append_nodes(0, 1, [(0, 1, b"\x00" * 32)])
    assert store.size() == 0
    with pytest.raises(LedgerError):
        store.get_nodes([(0, 0)])
