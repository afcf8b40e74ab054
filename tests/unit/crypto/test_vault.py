"""The Vault Transit key provider, against a loopback fake Vault with real AES-GCM."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from irmsia.crypto import create_key_provider
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.crypto.keys import KeyProvider, WrappedKey
from irmsia.crypto.vault import VaultTransitKeyProvider
from irmsia.errors import (
    ConfigError,
    ExternalServiceError,
    IntegrityError,
    IrmsiaError,
    ServiceTimeout,
    UnknownKey,
)
from tests.unit.crypto.conftest import VAULT_TOKEN
from tests.unit.crypto.fake_vault import FakeVault

DEK = bytes(range(32))


def test_vault_provider_satisfies_the_key_provider_protocol(vault_keys: VaultTransitKeyProvider) -> None:
    assert isinstance(vault_keys, KeyProvider)


def test_wrap_then_unwrap_returns_the_data_key(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault
) -> None:
    wrapped = vault_keys.wrap(DEK)
    assert wrapped.key_id == "vault:irmsia:v1"
    assert wrapped.ciphertext.startswith(b"vault:v1:")
    assert vault_keys.unwrap(wrapped) == DEK
    method, path, headers = fake_vault.state.requests[0]
    assert (method, path) == ("POST", "/v1/transit/encrypt/irmsia")
    assert headers["X-Vault-Token"] == VAULT_TOKEN


def test_rotate_then_rewrap_moves_a_data_key_to_the_new_version(vault_keys: VaultTransitKeyProvider) -> None:
    old = vault_keys.wrap(DEK)
    assert vault_keys.current_key_id() == "vault:irmsia:v1"
    assert vault_keys.rotate() == "vault:irmsia:v2"
    assert vault_keys.current_key_id() == "vault:irmsia:v2"
    assert vault_keys.key_ids() == ("vault:irmsia:v1", "vault:irmsia:v2")
    assert vault_keys.wrap(DEK).key_id == "vault:irmsia:v2"
    assert vault_keys.unwrap(old) == DEK
    new = vault_keys.rewrap(old)
    assert new.key_id == "vault:irmsia:v2"
    assert new.ciphertext.startswith(b"vault:v2:")
    assert vault_keys.unwrap(new) == DEK


def test_rotate_reads_the_version_when_vault_answers_204(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault
) -> None:
    fake_vault.state.rotate_returns_204 = True
    assert vault_keys.rotate() == "vault:irmsia:v2"


def test_key_ids_omit_versions_vault_no_longer_decrypts(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault
) -> None:
    vault_keys.rotate()
    vault_keys.rotate()
    fake_vault.state.min_decryption_version = 2
    assert vault_keys.key_ids() == ("vault:irmsia:v2", "vault:irmsia:v3")


def test_envelope_with_vault_survives_rotation_without_touching_blobs(
    vault_keys: VaultTransitKeyProvider,
) -> None:
    cipher = EnvelopeCipher(vault_keys)
    sealed = cipher.encrypt("obj-1", b"pixel data")
    blob = bytes(sealed.blob)
    vault_keys.rotate()
    rewrapped = cipher.rewrap(sealed.wrapped_key)
    assert rewrapped.key_id == "vault:irmsia:v2"
    assert cipher.decrypt("obj-1", blob, rewrapped) == b"pixel data"
    assert cipher.decrypt("obj-1", blob, sealed.wrapped_key) == b"pixel data"


def test_tampered_ciphertext_raises_integrity_error(vault_keys: VaultTransitKeyProvider) -> None:
    wrapped = vault_keys.wrap(DEK)
    body = bytearray(wrapped.ciphertext)
    body[-3] = ord("A") if body[-3] != ord("A") else ord("B")
    with pytest.raises(IntegrityError):
        vault_keys.unwrap(WrappedKey(wrapped.key_id, bytes(body)))
    with pytest.raises(IntegrityError):
        vault_keys.rewrap(WrappedKey(wrapped.key_id, bytes(body)))


def test_ciphertext_relabelled_to_another_version_is_refused(vault_keys: VaultTransitKeyProvider) -> None:
    wrapped = vault_keys.wrap(DEK)
    vault_keys.rotate()
    with pytest.raises(IntegrityError):
        vault_keys.unwrap(WrappedKey("vault:irmsia:v2", wrapped.ciphertext))


def test_version_retired_in_vault_is_refused(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault
) -> None:
    wrapped = vault_keys.wrap(DEK)
    vault_keys.rotate()
    fake_vault.state.min_decryption_version = 2
    with pytest.raises(IntegrityError):
        vault_keys.unwrap(wrapped)


@pytest.mark.parametrize("key_id", ["local-1", "vault:other:v1", "vault:irmsia-2:v1"])
def test_wrapped_key_of_another_key_raises_unknown_key(
    vault_keys: VaultTransitKeyProvider, key_id: str
) -> None:
    wrapped = vault_keys.wrap(DEK)
    with pytest.raises(UnknownKey):
        vault_keys.unwrap(WrappedKey(key_id, wrapped.ciphertext))


def test_wrong_token_is_an_external_service_error_without_the_token(
    fake_vault: FakeVault, http_client: httpx.Client
) -> None:
    provider = VaultTransitKeyProvider(fake_vault.url, "hvs.WRONGTOKENCANARY", "irmsia", http_client)
    with pytest.raises(ExternalServiceError) as caught:
        provider.wrap(DEK)
    assert "403" in str(caught.value)
    _assert_no_secret(caught.value, "hvs.WRONGTOKENCANARY")


def test_server_down_is_an_external_service_error_without_the_token(http_client: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    provider = VaultTransitKeyProvider(f"http://127.0.0.1:{port}", VAULT_TOKEN, "irmsia", http_client)
    with pytest.raises(ExternalServiceError) as caught:
        provider.wrap(DEK)
    assert not isinstance(caught.value, ServiceTimeout)
    _assert_no_secret(caught.value, VAULT_TOKEN)


def test_unanswered_request_is_a_service_timeout(fake_vault: FakeVault) -> None:
    fake_vault.state.hang = threading.Event()
    with httpx.Client(timeout=0.2) as client:
        provider = VaultTransitKeyProvider(fake_vault.url, VAULT_TOKEN, "irmsia", client)
        with pytest.raises(ServiceTimeout) as caught:
            provider.current_key_id()
    fake_vault.state.hang.set()
    _assert_no_secret(caught.value, VAULT_TOKEN)


@pytest.mark.parametrize("status", [404, 500, 503])
def test_error_statuses_are_external_service_errors(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault, status: int
) -> None:
    fake_vault.state.fail_status = status
    with pytest.raises(ExternalServiceError) as caught:
        vault_keys.rotate()
    assert str(status) in str(caught.value)
    _assert_no_secret(caught.value, VAULT_TOKEN)


def test_unknown_transit_key_is_an_external_service_error(
    fake_vault: FakeVault, http_client: httpx.Client
) -> None:
    provider = VaultTransitKeyProvider(fake_vault.url, VAULT_TOKEN, "missing", http_client)
    with pytest.raises(ExternalServiceError, match="not found"):
        provider.wrap(DEK)


def test_body_that_is_not_json_is_an_external_service_error(
    vault_keys: VaultTransitKeyProvider, fake_vault: FakeVault
) -> None:
    fake_vault.state.garbage_body = True
    with pytest.raises(ExternalServiceError, match="not JSON"):
        vault_keys.wrap(DEK)


def test_namespace_header_is_sent_when_configured(fake_vault: FakeVault, http_client: httpx.Client) -> None:
    provider = VaultTransitKeyProvider(fake_vault.url, VAULT_TOKEN, "irmsia", http_client, namespace="team-a")
    provider.wrap(DEK)
    assert fake_vault.state.requests[-1][2]["X-Vault-Namespace"] == "team-a"


def test_custom_mount_is_used_in_paths(fake_vault: FakeVault, http_client: httpx.Client) -> None:
    fake_vault.state.mount = "kms/transit"
    provider = VaultTransitKeyProvider(
        fake_vault.url, VAULT_TOKEN, "irmsia", http_client, mount="/kms/transit/"
    )
    assert provider.unwrap(provider.wrap(DEK)) == DEK
    assert fake_vault.state.requests[-1][1] == "/v1/kms/transit/decrypt/irmsia"


def test_repr_does_not_show_the_token(vault_keys: VaultTransitKeyProvider) -> None:
    assert VAULT_TOKEN not in repr(vault_keys)
    assert "irmsia" in repr(vault_keys)


@pytest.mark.parametrize(
    ("base_url", "token", "key_name", "mount"),
    [
        ("127.0.0.1:8200", VAULT_TOKEN, "irmsia", "transit"),
        ("http://vault:8200", "", "irmsia", "transit"),
        ("http://vault:8200", VAULT_TOKEN, "../sys", "transit"),
        ("http://vault:8200", VAULT_TOKEN, "..", "transit"),
        ("http://vault:8200", VAULT_TOKEN, "irmsia", "transit/.."),
        ("http://vault:8200", VAULT_TOKEN, "irmsia", "../sys"),
    ],
)
def test_unsafe_configuration_is_refused(
    http_client: httpx.Client, base_url: str, token: str, key_name: str, mount: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        VaultTransitKeyProvider(base_url, token, key_name, http_client, mount=mount)
    if token:
        _assert_no_secret(caught.value, token)


def test_registry_builds_the_vault_provider(fake_vault: FakeVault, http_client: httpx.Client) -> None:
    provider = create_key_provider(
        "vault", base_url=fake_vault.url, token=VAULT_TOKEN, key_name="irmsia", client=http_client
    )
    assert isinstance(provider, VaultTransitKeyProvider)
    assert provider.current_key_id() == "vault:irmsia:v1"


def _assert_no_secret(error: IrmsiaError, secret: str) -> None:
    assert secret not in str(error)
    assert secret not in repr(error)
    assert secret not in error.detail
