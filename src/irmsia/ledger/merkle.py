"""The append-only Merkle tree behind the ledger (RFC 9162 §2.1, identical to RFC 6962).

Leaf hash ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left || right)``, empty tree
``SHA-256("")``. The tree keeps only *complete* subtrees in a ``NodeStore``; the hash of any
incomplete subtree (a root at some size, a right-edge proof node) is folded on demand from the
O(log n) complete subtrees that cover it, and every proof or root reads its nodes in one
``get_nodes`` batch. In memory the tree holds just the peaks of the current size (its "frontier"),
so appending costs one leaf hash and, amortised, one node hash per leaf, and no store reads.

The tree is pure: no clock, no I/O besides the injected store. Proofs verify with
``irmsia.ledger.verifier``. Subtree functions follow draft-ietf-plants-merkle-tree-certs (a valid
subtree ``[start, end)`` starts at a multiple of ``bit_ceil(end - start)``); ``root(n)`` is the
subtree ``[0, n)`` and an inclusion proof is the subtree inclusion proof within ``[0, n)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from irmsia.errors import InvalidRequest
from irmsia.ledger.nodestore import Node, NodeKey, NodeStore

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

EMPTY_ROOT = _sha256(b"").digest()
"""The root of the empty tree, ``SHA-256("")`` (RFC 9162 §2.1.1)."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash of one entry's canonical bytes."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def is_valid_subtree(start: int, end: int) -> bool:
    """Whether ``[start, end)`` is a subtree: non-empty and ``start`` a multiple of ``bit_ceil(size)``."""
    if start < 0 or end <= start:
        return False
    size = end - start
    bit_ceil = 1 << (size - 1).bit_length()
    return start % bit_ceil == 0


def _cover(start: int, end: int) -> list[NodeKey]:
    """The complete subtrees, left to right, whose fold is the hash of valid subtree [start, end)."""
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Fold the cover of a subtree right to left into its hash (MTH of a left-filled tree)."""
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = _sha256(_NODE_PREFIX + hashes[i] + acc).digest()
    return acc


def _path_plan(level: int, index: int, size: int) -> list[list[NodeKey]]:
    """The audit path of node ``(level, index)`` in the tree of ``size`` leaves, bottom up.

    Each element is the cover of one proof hash: a single key for a complete sibling, several
    for the one right-edge sibling that the tree size cuts short (its hash is folded).
    """
    last = (size - 1) >> level
    # Below `inner` the node and the last leaf sit in different subtrees: every level there
    # contributes its sibling; the topmost of those siblings holds the last leaf, so may be cut.
    inner = (index ^ last).bit_length()
    plan: list[list[NodeKey]] = []
    for step in range(inner):
        node_level = level + step
        sibling = (index >> step) ^ 1
        if step == inner - 1:
            plan.append(_cover(sibling << node_level, min(size, (sibling + 1) << node_level)))
        else:
            plan.append([(node_level, sibling)])
    # Above `inner` the path runs along the right edge: only left siblings exist, one per set bit.
    rest = index >> inner
    node_level = level + inner
    while rest:
        if rest & 1:
            plan.append([(node_level, rest ^ 1)])
        rest >>= 1
        node_level += 1
    return plan


def _shift(plan: list[list[NodeKey]], start: int) -> list[list[NodeKey]]:
    """Move a plan computed for a tree at leaf 0 onto the subtree that begins at ``start``."""
    if start == 0:
        return plan
    return [[(level, index + (start >> level)) for level, index in cover] for cover in plan]


class MerkleTree:
    """An append-only RFC 9162 tree over a ``NodeStore``; cheap to reopen after a restart.

    Raises ``InvalidRequest`` for an index or size outside the tree, ``Conflict`` (from the
    store) when another writer appended since this object last read the size — call
    :meth:`reload` then — and ``LedgerError`` when the store lacks a node it should hold.
    Not thread-safe: serialise appends on one object (the store's size check catches writers
    in other processes).
    """

    def __init__(self, store: NodeStore) -> None:
        self._store = store
        self._size = 0
        self._frontier: list[bytes] = []
        self._root = EMPTY_ROOT
        self.reload()

    def reload(self) -> None:
        """Re-read the size and the O(log n) peaks from the store (after another writer appended)."""
        size = self._store.size()
        frontier = self._store.get_nodes(_cover(0, size)) if size else []
        self._size = size
        self._frontier = frontier
        self._root = _fold(frontier) if frontier else EMPTY_ROOT

    @property
    def size(self) -> int:
        """The number of leaves in the tree."""
        return self._size

    def append(self, entry: bytes) -> int:
        """Append one entry's canonical bytes; returns its leaf index."""
        return self.append_leaf_hashes([leaf_hash(entry)])

    def append_many(self, entries: Iterable[bytes]) -> int:
        """Append entries in order with one store write; returns the first new leaf index."""
        sha256 = _sha256
        return self.append_leaf_hashes([sha256(_LEAF_PREFIX + entry).digest() for entry in entries])

    def append_leaf_hashes(self, hashes: Sequence[bytes]) -> int:
        """Append already-computed leaf hashes in one store write; returns the first new index.

        Nothing changes (here or in the store) if the store write raises.
        """
        first = self._size
        if not hashes:
            return first
        if any(len(h) != HASH_SIZE for h in hashes):
            raise InvalidRequest("a leaf hash must be 32 bytes")
        sha256 = _sha256
        prefix = _NODE_PREFIX
        frontier = list(self._frontier)
        nodes: list[Node] = []
        add = nodes.append
        index = first
        for digest in hashes:
            add((0, index, digest))
            # Each trailing 1 bit of the index closes a complete subtree with the peak to its left.
            level = 0
            position = index
            while position & 1:
                digest = sha256(prefix + frontier.pop() + digest).digest()
                level += 1
                position >>= 1
                add((level, position, digest))
            frontier.append(digest)
            index += 1
        self._store.append_nodes(first, index, nodes)
        self._size = index
        self._frontier = frontier
        self._root = _fold(frontier)
        return first

    def root(self, size: int | None = None) -> bytes:
        """The tree head MTH of the first ``size`` leaves (default: all); O(log n) node reads."""
        if size is None or size == self._size:
            return self._root
        self._check_size(size)
        return self.subtree_hash(0, size) if size else EMPTY_ROOT

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored leaf hash at ``index``."""
        self._check_index(index, self._size)
        return self._store.get_nodes([(0, index)])[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 audit path of leaf ``index`` in the tree of ``size`` leaves (default: all)."""
        size = self._size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        return self._resolve(_path_plan(0, index, size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 proof that the tree of ``size1`` leaves is a prefix of ``size2``.

        Requires ``0 < size1 <= size2``; the proof is empty when the sizes are equal.
        """
        size2 = self._size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise InvalidRequest("consistency needs 0 < size1 <= size2")
        if size1 == size2:
            return []
        # Start from the last complete subtree of size1: it is a node of both trees, and its
        # audit path in size2 proves both roots. Omit it when it *is* tree 1 (size1 = 2**k):
        # the verifier already holds root1.
        level = (size1 & -size1).bit_length() - 1
        index = (size1 - 1) >> level
        plan = [] if index == 0 else [[(level, index)]]
        plan += _path_plan(level, index, size2)
        return self._resolve(plan)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Hash of the valid subtree ``[start, end)`` (MTH of those leaves); ``end <= size``."""
        self._check_subtree(start, end)
        return _fold(self._store.get_nodes(_cover(start, end)))

    def subtree_inclusion_proof(self, index: int, start: int, end: int) -> list[bytes]:
        """Audit path of leaf ``index`` within the valid subtree ``[start, end)``."""
        self._check_subtree(start, end)
        if not start <= index < end:
            raise InvalidRequest("leaf index is outside the subtree")
        return self._resolve(_shift(_path_plan(0, index - start, end - start), start))

    def _resolve(self, plan: list[list[NodeKey]]) -> list[bytes]:
        """Fetch every node of a plan in one batch and fold each cover into its proof hash."""
        keys = [key for cover in plan for key in cover]
        hashes = self._store.get_nodes(keys) if keys else []
        proof: list[bytes] = []
        offset = 0
        for cover in plan:
            count = len(cover)
            proof.append(hashes[offset] if count == 1 else _fold(hashes[offset : offset + count]))
            offset += count
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise InvalidRequest(f"tree size {size} is outside 0..{self._size}")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise InvalidRequest(f"leaf index {index} is outside a tree of size {size}")

    def _check_subtree(self, start: int, end: int) -> None:
        if not is_valid_subtree(start, end) or end > self._size:
            raise InvalidRequest(f"[{start}, {end}) is not a subtree of this tree")
