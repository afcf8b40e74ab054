"""Where the Merkle log keeps its complete-subtree hashes.

A node ``(level, index)`` is the RFC 9162 hash of the complete subtree of ``2**level`` leaves
that starts at leaf ``index * 2**level``; level 0 holds the leaf hashes. Nodes never change once
written, so a store only ever grows: appending leaves adds the new leaf hashes and every subtree
they complete, together with the new tree size, in one write. ``irmsia.ledger.merkle`` needs
nothing else to answer roots and proofs for any earlier size after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from irmsia.errors import Conflict, LedgerError

NodeKey = tuple[int, int]
"""``(level, index)`` of a complete subtree."""

Node = tuple[int, int, bytes]
"""``(level, index, hash)``: one complete-subtree hash to persist."""


class NodeStore(Protocol):
    """Persistence for complete-subtree hashes; one SQL table is enough to implement it.

    Implementations must make :meth:`append_nodes` atomic (nodes and size together) and must
    refuse it when the stored size is not ``old_size``, so two writers cannot interleave.
    """

    def size(self) -> int:
        """The number of leaves committed so far."""
        ...

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """The hashes for ``keys``, in the same order; one round trip for the whole batch.

        Raises ``LedgerError`` when a key is not stored (the store is corrupt or behind).
        """
        ...

    def append_nodes(self, old_size: int, new_size: int, nodes: Sequence[Node]) -> None:
        """Persist ``nodes`` and move the size from ``old_size`` to ``new_size`` in one write.

        Raises ``Conflict`` when the stored size is no longer ``old_size``.
        """
        ...


class MemoryNodeStore:
    """A ``NodeStore`` in process memory: for tests, benchmarks and short-lived trees."""

    def __init__(self) -> None:
        # One list per level: nodes of a level are created strictly left to right, so a list
        # indexed by node index is both the smallest and the fastest map here.
        self._levels: list[list[bytes]] = []
        self._size = 0

    def size(self) -> int:
        """The number of leaves committed so far."""
        return self._size

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """The hashes for ``keys``, in order; raises ``LedgerError`` for a missing node."""
        levels = self._levels
        try:
            return [levels[level][index] for level, index in keys]
        except IndexError:
            raise LedgerError("a requested Merkle node is not stored") from None

    def append_nodes(self, old_size: int, new_size: int, nodes: Sequence[Node]) -> None:
        """Append ``nodes`` and set the size; raises ``Conflict`` if ``old_size`` is stale."""
        if old_size != self._size:
            raise Conflict("the Merkle tree grew since it was read")
        if new_size < old_size:
            raise LedgerError("a Merkle tree cannot shrink")
        levels = self._levels
        # Validate before mutating so a bad batch leaves the store unchanged (atomicity).
        expected: dict[int, int] = {}
        for level, index, _ in nodes:
            want = expected.get(level, len(levels[level]) if level < len(levels) else 0)
            if index != want:
                raise LedgerError("Merkle nodes must be appended in order")
            expected[level] = want + 1
        for level, _, digest in nodes:
            while level >= len(levels):
                levels.append([])
            levels[level].append(digest)
        self._size = new_size
