"""A small loopback HTTP server speaking the part of Vault's Transit API IRMSIA uses.

Real AES-256-GCM with versioned keys, ciphertexts in Vault's ``vault:v<N>:<base64>``
form, token checking, and switches to make it fail (status, garbage body, hang).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_CIPHERTEXT = re.compile(r"vault:v([0-9]+):([A-Za-z0-9+/=]+)")


@dataclass
class TransitState:
    """What the fake Vault holds and how it should misbehave."""

    token: str
    mount: str = "transit"
    keys: dict[str, list[bytes]] = field(default_factory=dict)
    min_decryption_version: int = 1
    rotate_returns_204: bool = False
    fail_status: int | None = None
    garbage_body: bool = False
    hang: threading.Event | None = None
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_key(self, name: str) -> None:
        self.keys[name] = [AESGCM.generate_key(bit_length=256)]

    def encrypt(self, name: str, plaintext: bytes) -> str:
        version = len(self.keys[name])
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[name][version - 1]).encrypt(nonce, plaintext, None)
        return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, name: str, ciphertext: str) -> bytes | None:
        match = _CIPHERTEXT.fullmatch(ciphertext)
        if match is None:
            return None
        version = int(match.group(1))
        if not self.min_decryption_version <= version <= len(self.keys[name]):
            return None
        try:
            raw = base64.b64decode(match.group(2), validate=True)
            return AESGCM(self.keys[name][version - 1]).decrypt(raw[:12], raw[12:], None)
        except (binascii.Error, InvalidTag, ValueError):
            return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # Keep test output clean.
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        state.requests.append((method, self.path, dict(self.headers.items())))
        if state.hang is not None:
            state.hang.wait(timeout=10)
            return
        if state.fail_status is not None:
            self._send(state.fail_status, {"errors": ["injected failure"]})
            return
        if state.garbage_body:
            self._send_raw(200, b"<html>not json</html>")
            return
        if self.headers.get("X-Vault-Token") != state.token:
            self._send(403, {"errors": ["permission denied"]})
            return
        body = json.loads(raw) if raw else {}
        prefix = f"/v1/{state.mount}/"
        if not self.path.startswith(prefix):
            self._send(404, {"errors": ["no handler for route"]})
            return
        parts = self.path[len(prefix) :].split("/")
        with state.lock:
            self._route(method, parts, body)

    def _route(self, method: str, parts: list[str], body: dict[str, Any]) -> None:
        state = self.server.state
        name = parts[1] if len(parts) > 1 else ""
        if name not in state.keys:
            self._send(404, {"errors": ["key not found"]})
            return
        action = (method, parts[0], tuple(parts[2:]))
        if action == ("POST", "encrypt", ()):
            plaintext = base64.b64decode(body["plaintext"])
            version = len(state.keys[name])
            self._send(200, {"data": {"ciphertext": state.encrypt(name, plaintext), "key_version": version}})
        elif action == ("POST", "decrypt", ()):
            plain = state.decrypt(name, body.get("ciphertext", ""))
            if plain is None:
                self._send(400, {"errors": ["cipher: message authentication failed"]})
            else:
                self._send(200, {"data": {"plaintext": base64.b64encode(plain).decode()}})
        elif action == ("POST", "rewrap", ()):
            plain = state.decrypt(name, body.get("ciphertext", ""))
            if plain is None:
                self._send(400, {"errors": ["cipher: message authentication failed"]})
            else:
                self._send(200, {"data": {"ciphertext": state.encrypt(name, plain)}})
        elif action == ("POST", "keys", ("rotate",)):
            state.keys[name].append(AESGCM.generate_key(bit_length=256))
            if state.rotate_returns_204:
                self._send_raw(204, b"")
            else:
                self._send(200, {"data": self._key_info(name)})
        elif action == ("GET", "keys", ()):
            self._send(200, {"data": self._key_info(name)})
        else:
            self._send(405, {"errors": ["unsupported operation"]})

    def _key_info(self, name: str) -> dict[str, Any]:
        state = self.server.state
        versions = len(state.keys[name])
        return {
            "name": name,
            "type": "aes256-gcm96",
            "latest_version": versions,
            "min_decryption_version": state.min_decryption_version,
            "keys": {str(v): 1_700_000_000 + v for v in range(1, versions + 1)},
        }

    def _send(self, status: int, document: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(document).encode(), "application/json")

    def _send_raw(self, status: int, payload: bytes, content_type: str = "text/html") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if status != 204:
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: TransitState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FakeVault:
    """Run the fake Transit API on 127.0.0.1 with a free port, in a background thread."""

    def __init__(self, state: TransitState) -> None:
        self.state = state
        self._server = _Server(state)
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self.state.hang is not None:
            self.state.hang.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
