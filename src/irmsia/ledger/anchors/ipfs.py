"""``ipfs`` anchor: publish each signed checkpoint to a kubo node through its HTTP RPC API.

Uses three RPC calls (every kubo RPC call is a ``POST``):

* ``/api/v0/add?pin=true&cid-version=1`` with the note as a multipart file → ``{"Hash": CID}``
* ``/api/v0/cat?arg=CID`` → the bytes; read back at once, so a node that stored something
  else (or nothing) is caught at publication time, not at the next audit
* ``/api/v0/pin/ls?arg=CID&type=recursive`` → ``{"Keys": {CID: {"Type": "recursive"}}}``

The receipt records the CID and the SHA-256 of the note; :meth:`IpfsAnchor.fetch` checks the
bytes it gets back against that digest, so a lying node is detected. Pinning keeps the note
on that node; replicate the pin (a pinning service, an IPFS cluster) for it to outlive it.
The RPC API is admin-level: keep it on a private network (kubo binds localhost by default).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from irmsia.errors import ExternalServiceError, ServiceTimeout
from irmsia.ledger.anchors.base import AnchorReceipt
from irmsia.ledger.verifier import Checkpoint

MAX_NOTE_BYTES = 1 << 20


class IpfsAnchor:
    """Checkpoints added and pinned on a kubo node at ``host:port``.

    ``http`` may be injected (tests, custom TLS); otherwise one is created and owned.
    Raises ``ServiceTimeout`` / ``ExternalServiceError`` when the node misbehaves.
    """

    kind = "ipfs"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5001,
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._base = f"http://{bracketed}:{port}/api/v0"
        self._owned = http is None
        self._http = http or httpx.Client(timeout=timeout)

    def publish(self, checkpoint: Checkpoint, note: str) -> AnchorReceipt:
        """Add and pin ``note``, read it back, confirm the pin; returns the CID as reference."""
        data = note.encode("utf-8")
        added = self._json(
            self._call("add", {"pin": "true", "cid-version": "1"}, files={"file": ("checkpoint", data)})
        )
        cid = added.get("Hash")
        if not isinstance(cid, str) or not cid:
            raise ExternalServiceError("IPFS add answered without a CID")
        if self._cat(cid) != data:
            raise ExternalServiceError("IPFS returned different content for the CID it just created")
        try:
            pins = self._json(self._call("pin/ls", {"arg": cid, "type": "recursive"})).get("Keys")
        except ServiceTimeout:
            raise
        except ExternalServiceError:
            pins = None  # kubo answers an error for a CID that is not pinned
        if not isinstance(pins, dict) or cid not in pins:
            raise ExternalServiceError("IPFS did not pin the checkpoint")
        return AnchorReceipt(
            kind=self.kind,
            reference=cid,
            detail={
                "cid": cid,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "checkpoint_size": checkpoint.size,
                "pinned": True,
            },
        )

    def fetch(self, receipt: AnchorReceipt) -> str:
        """The note stored under the receipt's CID, checked against the recorded digest."""
        data = self._cat(receipt.reference)
        expected = receipt.detail.get("sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ExternalServiceError("IPFS returned content that does not match the anchored digest")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ExternalServiceError("IPFS returned content that is not a checkpoint note") from None

    def close(self) -> None:
        """Close the HTTP client when this anchor created it."""
        if self._owned:
            self._http.close()

    def _cat(self, cid: str) -> bytes:
        response = self._call("cat", {"arg": cid})
        if len(response.content) > MAX_NOTE_BYTES:
            raise ExternalServiceError("IPFS returned more data than a checkpoint")
        return response.content

    def _call(self, command: str, params: dict[str, str], files: Any = None) -> httpx.Response:
        try:
            response = self._http.post(f"{self._base}/{command}", params=params, files=files)
        except httpx.TimeoutException:
            raise ServiceTimeout(f"IPFS {command} timed out") from None
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"IPFS {command} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ExternalServiceError(f"IPFS {command} answered HTTP {response.status_code}")
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        # add streams one JSON object per line (progress, then the result); the last one counts.
        lines = [line for line in response.text.splitlines() if line.strip()]
        try:
            value = json.loads(lines[-1]) if lines else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ExternalServiceError("IPFS answered something that is not a JSON object")
        return value
