"""The one interface every checkpoint anchor implements, and the receipt it returns.

An anchor publishes *checkpoints* (signed tree heads, a few hundred bytes of opaque hashes)
to a ledger outside IRMSIA's database, so that rewriting the log later would contradict
something the operator cannot edit. Entries are never published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from irmsia.ledger.verifier import Checkpoint


@dataclass(frozen=True)
class AnchorReceipt:
    """What an anchor answered: its kind, a reference to find the publication again (a CID, a
    transaction id, ...) and any further JSON-able facts it returned."""

    kind: str
    reference: str
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Anchor(Protocol):
    """An external ledger that keeps published checkpoints.

    ``publish`` must be idempotent for the same checkpoint and must raise ``Conflict`` when the
    external ledger already holds a *different* root for the same origin and size (a rewrite);
    ``ExternalServiceError``/``ServiceTimeout`` when it cannot be reached or answers nonsense.
    ``fetch`` returns the signed checkpoint note the anchor holds for a receipt, verbatim.
    """

    kind: str

    def publish(self, checkpoint: Checkpoint, note: str) -> AnchorReceipt:
        """Publish one signed checkpoint (``note``, whose body is ``checkpoint``)."""
        ...

    def fetch(self, receipt: AnchorReceipt) -> str:
        """The signed checkpoint note the anchor holds under ``receipt``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
