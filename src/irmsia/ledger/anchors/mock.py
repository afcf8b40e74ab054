"""``mock`` anchor: an append-only Merkle log of checkpoints in process memory, for tests.

It behaves like the real anchors (idempotent publish, refuses a different root for a size it
already holds, fetch returns the note verbatim) and keeps what it is given in the same RFC 9162
log structure as the embedded ledger, over an in-memory node store. Everything is lost when
the process ends, so it proves nothing to an outsider; use ``ipfs`` or ``fabric`` for that.
"""

from __future__ import annotations

import base64
import threading

from irmsia.errors import Conflict, NotFound
from irmsia.ledger.anchors.base import AnchorReceipt
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.verifier import Checkpoint


class MockAnchor:
    """Checkpoints kept in a Merkle log in memory; thread-safe."""

    kind = "mock"

    def __init__(self) -> None:
        self._tree = MerkleTree(MemoryNodeStore())
        self._held: dict[tuple[str, int], tuple[bytes, str, int]] = {}
        self._lock = threading.Lock()

    def publish(self, checkpoint: Checkpoint, note: str) -> AnchorReceipt:
        """Append ``note`` unless this origin and size are held; raises ``Conflict`` on a rewrite."""
        key = (checkpoint.origin, checkpoint.size)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                root, _, index = held
                if root != checkpoint.root_hash:
                    raise Conflict("the anchor already holds a different root for this tree size")
            else:
                index = self._tree.append(note.encode("utf-8"))
                self._held[key] = (checkpoint.root_hash, note, index)
            return AnchorReceipt(
                kind=self.kind,
                reference=f"mock:{index}",
                detail={
                    "leaf_index": index,
                    "anchor_size": self._tree.size,
                    "anchor_root": base64.b64encode(self._tree.root()).decode(),
                },
            )

    def fetch(self, receipt: AnchorReceipt) -> str:
        """The note published under ``receipt``; raises ``NotFound`` (e.g. after a restart)."""
        with self._lock:
            for _, note, index in self._held.values():
                if receipt.reference == f"mock:{index}":
                    return note
        raise NotFound("the mock anchor does not hold that checkpoint")

    def close(self) -> None:
        """Nothing to release."""
