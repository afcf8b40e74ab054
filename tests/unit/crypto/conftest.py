"""Fixtures for the crypto tests: master keys, local key rings and a loopback fake Vault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from irmsia.crypto.keys import LocalKeyProvider
from irmsia.crypto.vault import VaultTransitKeyProvider
from tests.unit.crypto.fake_vault import FakeVault, TransitState

# Fixed, obviously fake test keys: recognisable if they ever leak into output.
MASTER_KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
OTHER_MASTER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100" * 2)
VAULT_TOKEN = "hvs.TESTTOKENCANARY0123456789"


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def local_keys(ring_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(MASTER_KEY, ring_path)


@pytest.fixture
def fake_vault() -> Iterator[FakeVault]:
    state = TransitState(token=VAULT_TOKEN)
    state.create_key("irmsia")
    state.create_key("other")
    server = FakeVault(state)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def vault_keys(fake_vault: FakeVault, http_client: httpx.Client) -> VaultTransitKeyProvider:
    return VaultTransitKeyProvider(fake_vault.url, VAULT_TOKEN, "irmsia", http_client)
