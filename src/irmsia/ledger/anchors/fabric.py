"""``fabric`` anchor: submit checkpoints to a Hyperledger Fabric chaincode via a REST sidecar.

IRMSIA does not embed a Fabric SDK. It speaks JSON over HTTP to a *gateway sidecar* (a small
service next to a peer that holds the client identity and uses the Fabric Gateway API):

* ``POST {FABRIC_GATEWAY_URL}/api/v1/channels/{channel}/chaincodes/{chaincode}/submit``
  body ``{"fn": "PutCheckpoint", "args": [origin, size, root_b64, note]}`` → 200
  ``{"transaction_id": "...", "result": "..."}`` once the transaction is committed
* ``POST .../evaluate`` body ``{"fn": "GetCheckpoint", "args": [origin, size]}`` → 200
  ``{"result": "<JSON text of the stored record>"}``; 404 when nothing is stored
* a chaincode refusal is answered 409 (conflict) or another 4xx, with ``{"error": "..."}``

The chaincode contract (what the chaincode must implement; this adapter relies on it):

``PutCheckpoint(origin, size, root_b64, note)``
    ``size`` is a canonical decimal, ``root_b64`` the base64 of 32 bytes, ``note`` the signed
    checkpoint whose first three lines are ``origin``, ``size`` and ``root_b64``. The record is
    kept under the composite key ``("checkpoint", origin, size)``. If that key already holds
    the same root, succeed without writing (idempotent). If it holds a *different* root,
    fail with an error starting ``CHECKPOINT_CONFLICT`` and write nothing: an anchored tree
    head can never be replaced, which is the whole point. Records are never deleted.
``GetCheckpoint(origin, size)``
    Return the JSON text ``{"origin", "size", "root", "note", "tx_id"}`` of the record, or fail
    with ``NOT_FOUND``.

With an endorsement policy that needs peers of more than one organisation, the hospital that
runs IRMSIA cannot rewrite an anchored checkpoint on its own.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx

from irmsia.errors import Conflict, ExternalServiceError, NotFound, ServiceTimeout
from irmsia.ledger.anchors.base import AnchorReceipt
from irmsia.ledger.verifier import Checkpoint


class FabricAnchor:
    """Checkpoints submitted to ``chaincode`` on ``channel`` through the sidecar at ``gateway_url``.

    ``http`` may be injected; otherwise one is created and owned. ``publish`` raises
    ``Conflict`` when the chaincode holds a different root for the size, ``ServiceTimeout`` or
    ``ExternalServiceError`` when the sidecar or network fails.
    """

    kind = "fabric"

    def __init__(
        self,
        gateway_url: str,
        channel: str,
        chaincode: str,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        base = gateway_url.rstrip("/")
        self._base = (
            f"{base}/api/v1/channels/{quote(channel, safe='')}/chaincodes/{quote(chaincode, safe='')}"
        )
        self.channel = channel
        self.chaincode = chaincode
        self._owned = http is None
        self._http = http or httpx.Client(timeout=timeout)

    def publish(self, checkpoint: Checkpoint, note: str) -> AnchorReceipt:
        """Submit ``PutCheckpoint``, then read the record back and check it holds this note."""
        root = base64.b64encode(checkpoint.root_hash).decode()
        answer = self._call("submit", "PutCheckpoint", [checkpoint.origin, str(checkpoint.size), root, note])
        tx_id = answer.get("transaction_id")
        if not isinstance(tx_id, str) or not tx_id:
            raise ExternalServiceError("Fabric gateway answered without a transaction id")
        try:
            stored = self._record(checkpoint.origin, checkpoint.size)
        except NotFound:
            raise ExternalServiceError("the chaincode did not keep the submitted checkpoint") from None
        if stored.get("root") != root:
            raise Conflict("the anchor already holds a different root for this tree size")
        return AnchorReceipt(
            kind=self.kind,
            reference=tx_id,
            detail={
                "transaction_id": tx_id,
                "channel": self.channel,
                "chaincode": self.chaincode,
                "origin": checkpoint.origin,
                "checkpoint_size": checkpoint.size,
                "root": root,
            },
        )

    def fetch(self, receipt: AnchorReceipt) -> str:
        """The note the chaincode holds for the receipt's origin and size."""
        origin, size = receipt.detail.get("origin"), receipt.detail.get("checkpoint_size")
        if not isinstance(origin, str) or not isinstance(size, int):
            raise ExternalServiceError("the Fabric receipt lacks origin and size")
        note = self._record(origin, size).get("note")
        if not isinstance(note, str):
            raise ExternalServiceError("the Fabric record holds no checkpoint note")
        return note

    def close(self) -> None:
        """Close the HTTP client when this anchor created it."""
        if self._owned:
            self._http.close()

    def _record(self, origin: str, size: int) -> dict[str, Any]:
        result = self._call("evaluate", "GetCheckpoint", [origin, str(size)]).get("result")
        try:
            record = json.loads(result) if isinstance(result, str) else result
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise ExternalServiceError("Fabric GetCheckpoint answered something that is not a record")
        return record

    def _call(self, mode: str, fn: str, args: list[str]) -> dict[str, Any]:
        try:
            response = self._http.post(f"{self._base}/{mode}", json={"fn": fn, "args": args})
        except httpx.TimeoutException:
            raise ServiceTimeout(f"Fabric {fn} timed out") from None
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"Fabric {fn} failed: {type(exc).__name__}") from None
        if response.status_code == 409:
            raise Conflict("the anchor already holds a different root for this tree size")
        if response.status_code == 404:
            if mode == "evaluate":
                raise NotFound("the Fabric ledger holds no such checkpoint")
            raise ExternalServiceError("the Fabric gateway knows no such channel or chaincode")
        if response.status_code != 200:
            raise ExternalServiceError(f"Fabric {fn} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ExternalServiceError(f"Fabric {fn} answered something that is not a JSON object")
        return body
