"""Property tests: proofs for random sizes verify, tampered ones do not, reopening changes nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from irmsia.ledger.merkle import MerkleTree, leaf_hash
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.verifier import VerificationError, verify_consistency, verify_inclusion

MAX_LEAVES = 300
# deadline=None: these tests assert outcomes, never timing, so a slow shared machine must not fail
# them; database=None: no example database written into the checkout.
PROPERTY = settings(max_examples=150, deadline=None, database=None)


def _build(count: int) -> MerkleTree:
    tree = MerkleTree(MemoryNodeStore())
    # Distinct leaves: with equal leaves, swapping two indices would rightly still verify.
    tree.append_many(f"leaf-{i}".encode() for i in range(count))
    return tree


TREE = _build(MAX_LEAVES)


def _flip_bit(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    tampered = list(proof)
    item = bytearray(tampered[element])
    item[bit // 8] ^= 1 << (bit % 8)
    tampered[element] = bytes(item)
    return tampered


def _rejects_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except VerificationError:
        return True
    return False


def _rejects_consistency(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> bool:
    try:
        verify_consistency(size1, size2, proof, root1, root2)
    except VerificationError:
        return True
    return False


@st.composite
def _leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_LEAVES))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(2, MAX_LEAVES))
    return draw(st.integers(1, size2 - 1)), size2


@PROPERTY
@given(_leaf_in_tree())
def test_inclusion_proof_for_any_leaf_and_size_verifies(case: tuple[int, int]) -> None:
    index, size = case
    proof = TREE.inclusion_proof(index, size)
    verify_inclusion(TREE.leaf_hash_at(index), index, size, proof, TREE.root(size))
    assert len(proof) <= (size - 1).bit_length()


@PROPERTY
@given(_leaf_in_tree(), st.data())
def test_inclusion_proof_with_any_flipped_bit_is_rejected(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = TREE.inclusion_proof(index, size)
    leaf, root = TREE.leaf_hash_at(index), TREE.root(size)
    if proof:
        element = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        assert _rejects_inclusion(leaf, index, size, _flip_bit(proof, element, bit), root)
    assert _rejects_inclusion(leaf_hash(b"not in the log"), index, size, proof, root)
    assert _rejects_inclusion(leaf, index, size, [*proof, root], root)
    if proof:
        assert _rejects_inclusion(leaf, index, size, proof[:-1], root)


@PROPERTY
@given(_leaf_in_tree(), st.integers(0, MAX_LEAVES - 1))
def test_inclusion_proof_is_rejected_at_another_index(case: tuple[int, int], other: int) -> None:
    index, size = case
    other %= size
    proof = TREE.inclusion_proof(index, size)
    if other != index:
        assert _rejects_inclusion(TREE.leaf_hash_at(index), other, size, proof, TREE.root(size))


@PROPERTY
@given(_two_sizes(), st.data())
def test_consistency_proof_verifies_and_tampering_is_rejected(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = sizes
    proof = TREE.consistency_proof(size1, size2)
    root1, root2 = TREE.root(size1), TREE.root(size2)
    verify_consistency(size1, size2, proof, root1, root2)
    assert len(proof) <= (size2 - 1).bit_length() + 1
    element = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    assert _rejects_consistency(size1, size2, _flip_bit(proof, element, bit), root1, root2)
    assert _rejects_consistency(size1, size2, proof, root2, root1)
    assert _rejects_consistency(size1, size2, proof[:-1], root1, root2)
    # A different history of the same size: replace leaf 0 and the old root no longer fits.
    forked = MerkleTree(MemoryNodeStore())
    forked.append_many([b"forged", *(f"leaf-{i}".encode() for i in range(1, size2))])
    assert _rejects_consistency(size1, size2, proof, forked.root(size1), root2)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_tree_reopened_from_store_gives_identical_roots_and_proofs(batches: list[int]) -> None:
    store = MemoryNodeStore()
    writer = MerkleTree(store)
    for count in batches:
        writer.append_many(f"leaf-{writer.size + i}".encode() for i in range(count))
        reopened = MerkleTree(store)
        assert reopened.size == writer.size
        assert reopened.root() == writer.root() == TREE.root(writer.size)
    size = writer.size
    for n in range(1, size + 1):
        assert reopened.root(n) == TREE.root(n)
        assert reopened.inclusion_proof(n - 1, size) == TREE.inclusion_proof(n - 1, size)
        assert reopened.consistency_proof(n, size) == TREE.consistency_proof(n, size)
