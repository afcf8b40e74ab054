"""Loopback stand-ins for the external anchors, started by the tests themselves.

``FakeKubo`` speaks the three kubo RPC calls the IPFS anchor uses (add, cat, pin/ls) and is
content-addressed: a CIDv1 of the raw codec over the SHA-256 of the bytes, as kubo gives for a
small file added with ``cid-version=1``. ``FakeFabricGateway`` speaks the REST sidecar protocol
documented in ``irmsia.ledger.anchors.fabric`` and implements the chaincode contract (no
overwrite of a different root for the same origin and size).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def raw_cid(data: bytes) -> str:
    """CIDv1, raw codec (0x55), sha2-256 multihash, multibase base32 lower ('b' prefix)."""
    binary = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class FakeKubo:
    """A content-addressed store behind kubo's RPC paths.

    ``lie`` makes ``cat`` return other bytes; ``pin_on_add = False`` makes ``add`` ignore ``pin``.
    """

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.pins: set[str] = set()
        self.calls: list[str] = []
        self.lie = False
        self.pin_on_add = True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        node = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                node.calls.append(url.path)
                body = self._body()
                if url.path == "/api/v0/add":
                    data = _multipart_file(self.headers.get("Content-Type", ""), body)
                    if data is None:
                        self._json(
                            400, {"Message": "file argument 'path' is required", "Code": 1, "Type": "error"}
                        )
                        return
                    cid = raw_cid(data)
                    node.blocks[cid] = data
                    if query.get("pin", "true") == "true" and node.pin_on_add:
                        node.pins.add(cid)
                    self._json(200, {"Name": "checkpoint", "Hash": cid, "Size": str(len(data))})
                elif url.path == "/api/v0/cat":
                    data = node.blocks.get(query.get("arg", ""))
                    if data is None:
                        self._json(
                            500, {"Message": "block was not found locally", "Code": 0, "Type": "error"}
                        )
                        return
                    self._send(200, data + b"tampered" if node.lie else data, "text/plain")
                elif url.path == "/api/v0/pin/ls":
                    cid = query.get("arg", "")
                    if cid not in node.pins:
                        self._json(
                            500, {"Message": f"path '{cid}' is not pinned", "Code": 0, "Type": "error"}
                        )
                        return
                    self._json(200, {"Keys": {cid: {"Type": "recursive"}}})
                else:
                    self._json(404, {"Message": "command not found", "Code": 0, "Type": "error"})

            def do_GET(self) -> None:
                # kubo refuses GET on the RPC API.
                self._json(405, {"Message": "method not allowed", "Code": 0, "Type": "error"})

        return Handler


def _multipart_file(content_type: str, body: bytes) -> bytes | None:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload
    return None


class FakeFabricGateway:
    """The gateway sidecar and the checkpoint chaincode, in memory."""

    def __init__(self, channel: str = "mychannel", chaincode: str = "irmsia-ledger") -> None:
        self.prefix = f"/api/v1/channels/{channel}/chaincodes/{chaincode}/"
        self.world: dict[tuple[str, int], dict[str, Any]] = {}
        self.transactions = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                if not self.path.startswith(gateway.prefix):
                    self._json(404, {"error": "no such channel or chaincode"})
                    return
                mode = self.path[len(gateway.prefix) :]
                try:
                    call = json.loads(self._body())
                    fn, args = call["fn"], call["args"]
                except (ValueError, KeyError, TypeError):
                    self._json(400, {"error": "malformed request"})
                    return
                if mode == "submit" and fn == "PutCheckpoint" and len(args) == 4:
                    self._put(*args)
                elif mode == "evaluate" and fn == "GetCheckpoint" and len(args) == 2:
                    record = gateway.world.get((args[0], int(args[1])))
                    if record is None:
                        self._json(404, {"error": "NOT_FOUND"})
                    else:
                        self._json(200, {"result": json.dumps(record)})
                else:
                    self._json(400, {"error": "unknown function"})

            def _put(self, origin: str, size: str, root: str, note: str) -> None:
                if not size.isdigit() or len(base64.b64decode(root)) != 32:
                    self._json(400, {"error": "invalid checkpoint"})
                    return
                if not note.startswith(f"{origin}\n{size}\n{root}\n"):
                    self._json(400, {"error": "note does not match the checkpoint"})
                    return
                key = (origin, int(size))
                held = gateway.world.get(key)
                if held is not None:
                    if held["root"] != root:
                        self._json(409, {"error": "CHECKPOINT_CONFLICT: a different root is anchored"})
                        return
                    self._json(200, {"transaction_id": held["tx_id"], "result": ""})
                    return
                gateway.transactions += 1
                tx_id = hashlib.sha256(f"tx{gateway.transactions}".encode()).hexdigest()
                gateway.world[key] = {
                    "origin": origin,
                    "size": int(size),
                    "root": root,
                    "note": note,
                    "tx_id": tx_id,
                }
                self._json(200, {"transaction_id": tx_id, "result": ""})

        return Handler


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[str, int]]:
    """Run ``handler`` on a loopback port in a thread; yields ``(host, port)``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
