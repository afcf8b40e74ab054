"""Encryption at rest: envelope encryption, key providers and digests.

* ``envelope.EnvelopeCipher`` — per-object AES-256-GCM data keys, wrapped by a
  ``KeyProvider``; one-shot and chunked (streaming) blob formats.
* ``keys.KeyProvider`` — the interface; ``keys.LocalKeyProvider`` (``ENCRYPTION_KEY``
  plus a key-ring file) and ``vault.VaultTransitKeyProvider`` (HashiCorp Vault Transit).
* ``digest`` — SHA-256 helpers.

Key providers are built through ``create_key_provider(kind, **params)``, which imports
the backend module only when asked, like ``irmsia.storage.create_blob_store``.
"""

from __future__ import annotations

from typing import Any

from irmsia.crypto.envelope import EnvelopeCipher, Sealed, SealedStream
from irmsia.crypto.keys import KeyProvider, LocalKeyProvider, WrappedKey
from irmsia.plugins import load_plugin

KEY_PROVIDERS: dict[str, str] = {
    "local": "irmsia.crypto.keys:LocalKeyProvider",
    "vault": "irmsia.crypto.vault:VaultTransitKeyProvider",
}
"""Key provider kind → ``module:Class``."""


def create_key_provider(kind: str, **params: Any) -> KeyProvider:
    """Build the ``kind`` key provider with ``params`` passed to its constructor.

    Raises ``ConfigError`` for an unknown kind or a provider whose library is missing.
    """
    provider: KeyProvider = load_plugin(KEY_PROVIDERS, kind, "key provider")(**params)
    return provider


__all__ = [
    "KEY_PROVIDERS",
    "EnvelopeCipher",
    "KeyProvider",
    "LocalKeyProvider",
    "Sealed",
    "SealedStream",
    "WrappedKey",
    "create_key_provider",
]
