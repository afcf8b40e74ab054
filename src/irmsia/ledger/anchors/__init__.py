"""Checkpoint anchors: one ``Anchor`` interface and a lazy registry of implementations.

Implementations are named by import path and imported only when ``create_anchor`` asks for
them, so a missing optional library never breaks ``import irmsia``; asking for an anchor that
cannot be built raises ``ConfigError`` saying why.

    anchor = create_anchor("mock")
    anchor = create_anchor("ipfs", host="127.0.0.1", port=5001)
    anchor = create_anchor("fabric", gateway_url="http://fabric-gw:8080", channel="mychannel",
                           chaincode="irmsia-ledger")
"""

from __future__ import annotations

from typing import Any

from irmsia.ledger.anchors.base import Anchor, AnchorReceipt
from irmsia.plugins import load_plugin

ANCHORS: dict[str, str] = {
    "mock": "irmsia.ledger.anchors.mock:MockAnchor",
    "ipfs": "irmsia.ledger.anchors.ipfs:IpfsAnchor",
    "fabric": "irmsia.ledger.anchors.fabric:FabricAnchor",
}
"""Anchor kind → ``module:Class``. Constant on purpose: no global registration."""


def create_anchor(kind: str, **params: Any) -> Anchor:
    """Build the ``kind`` anchor with ``params`` passed to its constructor.

    Raises ``ConfigError`` for an unknown or unavailable kind.
    """
    anchor: Anchor = load_plugin(ANCHORS, kind, "anchor")(**params)
    return anchor


__all__ = ["ANCHORS", "Anchor", "AnchorReceipt", "create_anchor"]
