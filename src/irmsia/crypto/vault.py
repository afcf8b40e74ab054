"""Key provider backed by HashiCorp Vault's Transit secrets engine (or OpenBao's).

The KEK never leaves Vault: IRMSIA sends a data key to ``/v1/{mount}/encrypt/{name}``
and keeps the returned ``vault:v<N>:…`` ciphertext as the wrapped key. Each Transit key
version is one KEK, with id ``vault:{name}:v<N>``. ``rotate`` adds a version;
``rewrap`` asks Vault to re-encrypt a wrapped key under the latest version, so the data
key is never exposed to IRMSIA during rotation.

Endpoints used (all with the ``X-Vault-Token`` header):

    POST /v1/{mount}/encrypt/{name}        {"plaintext": b64}   → data.ciphertext
    POST /v1/{mount}/decrypt/{name}        {"ciphertext": …}    → data.plaintext (b64)
    POST /v1/{mount}/rewrap/{name}         {"ciphertext": …}    → data.ciphertext
    POST /v1/{mount}/keys/{name}/rotate                         → 200 key info or 204
    GET  /v1/{mount}/keys/{name}                                → data.latest_version,
                                                                  data.min_decryption_version

Failures map to IRMSIA errors in one place (``_call``): a timeout → ``ServiceTimeout``;
no connection, 5xx, 401/403, 404 or an unexpected body → ``ExternalServiceError``; a
400 from decrypt or rewrap (the ciphertext does not authenticate) → ``IntegrityError``.
The token never appears in a message or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import httpx

from irmsia.crypto.keys import WrappedKey
from irmsia.errors import ConfigError, ExternalServiceError, IntegrityError, ServiceTimeout, UnknownKey

# Names start with a letter, digit or '_' so no segment can be '.' or '..'.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MOUNT = re.compile(rf"{_NAME.pattern}(?:/{_NAME.pattern})*")
_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,8}):[A-Za-z0-9+/=]+")


class VaultTransitKeyProvider:
    """KEKs are versions of one Vault Transit key; see the module docstring.

    ``client`` is an ``httpx.Client`` built by the caller (timeouts, TLS verification
    and CA bundle are configured there). ``namespace`` sets ``X-Vault-Namespace`` for
    Vault Enterprise / HCP. Nothing is sent to Vault until a method is called.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        key_name: str,
        client: httpx.Client,
        mount: str = "transit",
        namespace: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("VAULT_ADDR must be an http:// or https:// URL")
        if not token:
            raise ConfigError("VAULT_TOKEN must be set for the Vault key provider")
        if not _NAME.fullmatch(key_name):
            raise ConfigError("VAULT_TRANSIT_KEY may hold only letters, digits, '_', '.', '-'")
        mount = mount.strip("/")
        if not _MOUNT.fullmatch(mount):
            raise ConfigError("VAULT_TRANSIT_MOUNT may hold only letters, digits, '_', '.', '-', '/'")
        self._base = f"{base_url.rstrip('/')}/v1/{mount}"
        self._key_name = key_name
        self._client = client
        self._headers = {"X-Vault-Token": token}
        if namespace:
            self._headers["X-Vault-Namespace"] = namespace

    def __repr__(self) -> str:
        return f"VaultTransitKeyProvider(url={self._base!r}, key={self._key_name!r})"

    def current_key_id(self) -> str:
        """Return the id of the key's latest version (one GET)."""
        return self._key_id(self._read_key()[0])

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every version Vault still allows to decrypt, oldest first."""
        latest, min_decryption = self._read_key()
        return tuple(self._key_id(version) for version in range(min_decryption, latest + 1))

    def wrap(self, dek: bytes) -> WrappedKey:
        """Encrypt ``dek`` with the latest key version."""
        data = self._call("POST", f"encrypt/{self._key_name}", {"plaintext": _b64(dek)}, "encrypt")
        return self._wrapped(data)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Ask Vault to decrypt a wrapped data key.

        Raises ``UnknownKey`` for another provider's or key's id, ``IntegrityError`` if
        the ciphertext disagrees with its id or Vault cannot authenticate it.
        """
        ciphertext = self._ciphertext_for(wrapped)
        data = self._call(
            "POST", f"decrypt/{self._key_name}", {"ciphertext": ciphertext}, "decrypt", integrity_on_400=True
        )
        try:
            return base64.b64decode(str(data["plaintext"]), validate=True)
        except (KeyError, binascii.Error):
            raise ExternalServiceError("Vault decrypt returned an unexpected response") from None

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """Have Vault re-encrypt the wrapped key under the latest version (no plaintext here)."""
        ciphertext = self._ciphertext_for(wrapped)
        data = self._call(
            "POST", f"rewrap/{self._key_name}", {"ciphertext": ciphertext}, "rewrap", integrity_on_400=True
        )
        return self._wrapped(data)

    def rotate(self) -> str:
        """Add a key version in Vault and return its id."""
        data = self._call("POST", f"keys/{self._key_name}/rotate", None, "rotate")
        latest = data.get("latest_version")
        if isinstance(latest, int) and latest > 0:
            return self._key_id(latest)
        # Older Vault versions answer 204 without the key's state: read it.
        return self.current_key_id()

    def _read_key(self) -> tuple[int, int]:
        data = self._call("GET", f"keys/{self._key_name}", None, "read key")
        latest = data.get("latest_version")
        min_decryption = data.get("min_decryption_version", 1)
        if not isinstance(latest, int) or not isinstance(min_decryption, int) or latest < 1:
            raise ExternalServiceError("Vault read key returned an unexpected response")
        return latest, max(min_decryption, 1)

    def _key_id(self, version: int) -> str:
        return f"vault:{self._key_name}:v{version}"

    def _ciphertext_for(self, wrapped: WrappedKey) -> str:
        prefix = f"vault:{self._key_name}:v"
        if not wrapped.key_id.startswith(prefix):
            raise UnknownKey("wrapped data key names a KEK that is not this Vault transit key")
        try:
            ciphertext = wrapped.ciphertext.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError("wrapped data key is not a Vault ciphertext: corrupted") from None
        match = _CIPHERTEXT.fullmatch(ciphertext)
        if match is None or wrapped.key_id != self._key_id(int(match.group(1))):
            raise IntegrityError("wrapped data key does not match its key id: corrupted or relabelled")
        return ciphertext

    def _wrapped(self, data: dict[str, Any]) -> WrappedKey:
        ciphertext = data.get("ciphertext")
        match = _CIPHERTEXT.fullmatch(ciphertext) if isinstance(ciphertext, str) else None
        if match is None or not isinstance(ciphertext, str):
            raise ExternalServiceError("Vault returned an unexpected ciphertext")
        return WrappedKey(self._key_id(int(match.group(1))), ciphertext.encode("ascii"))

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        operation: str,
        integrity_on_400: bool = False,
    ) -> dict[str, Any]:
        """Send one request; return the response's ``data`` object ({} for 204).

        The only place that turns httpx errors and Vault statuses into IRMSIA errors.
        """
        try:
            response = self._client.request(method, f"{self._base}/{path}", json=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise ServiceTimeout(f"Vault {operation} timed out") from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"Vault {operation} failed: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 204:
            return {}
        if status == 400 and integrity_on_400:
            raise IntegrityError(f"Vault could not {operation} the wrapped data key: tampered or not allowed")
        if status in (401, 403):
            raise ExternalServiceError(
                f"Vault {operation} refused: the token lacks permission (HTTP {status})"
            )
        if status == 404:
            raise ExternalServiceError(f"Vault {operation} failed: transit mount or key not found (HTTP 404)")
        if status >= 400:
            raise ExternalServiceError(f"Vault {operation} failed (HTTP {status})")
        try:
            document = response.json()
        except ValueError:
            raise ExternalServiceError(f"Vault {operation} returned a body that is not JSON") from None
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            raise ExternalServiceError(f"Vault {operation} returned an unexpected response")
        return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
