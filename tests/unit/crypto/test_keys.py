"""The local key provider: KEKs from ENCRYPTION_KEY, rotation through the key-ring file."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from irmsia.crypto import create_key_provider
from irmsia.crypto.keys import (
    KeyProvider,
    LocalKeyProvider,
    WrappedKey,
    parse_master_key,
    read_master_key_file,
)
from irmsia.errors import ConfigError, IntegrityError, UnknownKey
from tests.unit.crypto.conftest import MASTER_KEY, OTHER_MASTER_KEY

DEK = bytes(range(32))


def test_local_provider_satisfies_the_key_provider_protocol(local_keys: LocalKeyProvider) -> None:
    assert isinstance(local_keys, KeyProvider)


def test_without_rotation_there_is_one_kek_and_no_ring_file(
    local_keys: LocalKeyProvider, ring_path: Path
) -> None:
    assert local_keys.current_key_id() == "local-1"
    assert local_keys.key_ids() == ("local-1",)
    assert not ring_path.exists()


def test_wrap_then_unwrap_returns_the_data_key(local_keys: LocalKeyProvider) -> None:
    wrapped = local_keys.wrap(DEK)
    assert wrapped.key_id == "local-1"
    assert DEK not in wrapped.ciphertext
    assert local_keys.unwrap(wrapped) == DEK


def test_same_master_key_unwraps_in_a_new_process(local_keys: LocalKeyProvider, ring_path: Path) -> None:
    wrapped = local_keys.wrap(DEK)
    assert LocalKeyProvider(MASTER_KEY, ring_path).unwrap(wrapped) == DEK


def test_wrong_master_key_fails_to_unwrap(local_keys: LocalKeyProvider) -> None:
    wrapped = local_keys.wrap(DEK)
    with pytest.raises(IntegrityError):
        LocalKeyProvider(OTHER_MASTER_KEY).unwrap(wrapped)


def test_rotation_adds_a_kek_and_keeps_the_old_ones(local_keys: LocalKeyProvider) -> None:
    old = local_keys.wrap(DEK)
    assert local_keys.rotate() == "local-2"
    assert local_keys.rotate() == "local-3"
    assert local_keys.key_ids() == ("local-1", "local-2", "local-3")
    assert local_keys.current_key_id() == "local-3"
    assert local_keys.wrap(DEK).key_id == "local-3"
    assert local_keys.unwrap(old) == DEK


def test_rewrap_moves_to_the_current_kek(local_keys: LocalKeyProvider) -> None:
    old = local_keys.wrap(DEK)
    local_keys.rotate()
    new = local_keys.rewrap(old)
    assert new.key_id == "local-2"
    assert local_keys.unwrap(new) == DEK


def test_ring_file_is_private_and_holds_no_plaintext_key(
    local_keys: LocalKeyProvider, ring_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = bytes.fromhex("5a" * 32)
    monkeypatch.setattr(AESGCM, "generate_key", staticmethod(lambda bit_length: planted))
    local_keys.rotate()
    monkeypatch.undo()
    assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring_path.parent.stat().st_mode) == 0o700
    raw = ring_path.read_bytes()
    for secret in (planted, MASTER_KEY):
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)):
            assert form not in raw
    document = json.loads(raw)
    assert document["format"] == "irmsia-keyring"
    assert [entry["id"] for entry in document["keys"]] == ["local-2"]
    # The planted KEK really is the one in use: wrapping with it directly matches.
    wrapped = local_keys.wrap(DEK)
    nonce, sealed = wrapped.ciphertext[:12], wrapped.ciphertext[12:]
    assert AESGCM(planted).decrypt(nonce, sealed, b"irmsia/dek/v1\x00local-2") == DEK


def test_rotated_keys_survive_a_restart(local_keys: LocalKeyProvider, ring_path: Path) -> None:
    local_keys.rotate()
    wrapped = local_keys.wrap(DEK)
    reopened = LocalKeyProvider(MASTER_KEY, ring_path)
    assert reopened.current_key_id() == "local-2"
    assert reopened.unwrap(wrapped) == DEK


def test_ring_opened_with_the_wrong_master_key_is_refused(
    local_keys: LocalKeyProvider, ring_path: Path
) -> None:
    local_keys.rotate()
    with pytest.raises(IntegrityError, match="ENCRYPTION_KEY"):
        LocalKeyProvider(OTHER_MASTER_KEY, ring_path)


def _edit_ring(ring_path: Path, field: str, value: object) -> None:
    document = json.loads(ring_path.read_text())
    document["keys"][0][field] = value
    ring_path.write_text(json.dumps(document))


def test_tampered_ring_entry_is_refused(local_keys: LocalKeyProvider, ring_path: Path) -> None:
    local_keys.rotate()
    sealed = bytearray(base64.b64decode(json.loads(ring_path.read_text())["keys"][0]["key"]))
    sealed[0] ^= 1
    _edit_ring(ring_path, "key", base64.b64encode(bytes(sealed)).decode())
    with pytest.raises(IntegrityError):
        LocalKeyProvider(MASTER_KEY, ring_path)


def test_relabelled_ring_entry_is_refused(local_keys: LocalKeyProvider, ring_path: Path) -> None:
    local_keys.rotate()
    _edit_ring(ring_path, "id", "local-7")
    with pytest.raises(IntegrityError):
        LocalKeyProvider(MASTER_KEY, ring_path)


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"format": "other", "keys": []}'])
def test_corrupt_ring_file_is_refused(ring_path: Path, content: bytes) -> None:
    ring_path.parent.mkdir()
    ring_path.write_bytes(content)
    with pytest.raises(IntegrityError):
        LocalKeyProvider(MASTER_KEY, ring_path)


def test_rotation_by_another_process_is_picked_up(ring_path: Path) -> None:
    server = LocalKeyProvider(MASTER_KEY, ring_path)
    cli = LocalKeyProvider(MASTER_KEY, ring_path)
    cli.rotate()
    wrapped = cli.wrap(DEK)
    assert server.unwrap(wrapped) == DEK
    # A later rotation elsewhere does not overwrite the one it did not see.
    assert server.rotate() == "local-3"
    assert LocalKeyProvider(MASTER_KEY, ring_path).key_ids() == ("local-1", "local-2", "local-3")


def test_running_provider_wraps_under_a_kek_rotated_by_another_process(ring_path: Path) -> None:
    server = LocalKeyProvider(MASTER_KEY, ring_path)
    assert server.wrap(DEK).key_id == "local-1"
    LocalKeyProvider(MASTER_KEY, ring_path).rotate()
    assert server.current_key_id() == "local-2"
    wrapped = server.wrap(DEK)
    assert wrapped.key_id == "local-2"
    assert server.unwrap(wrapped) == DEK


def test_rotations_from_several_providers_never_reuse_a_key_id(ring_path: Path) -> None:
    providers = [LocalKeyProvider(MASTER_KEY, ring_path) for _ in range(3)]
    new_ids = [provider.rotate() for provider in providers for _ in range(2)]
    assert new_ids == [f"local-{n}" for n in range(2, 8)]
    assert stat.S_IMODE(ring_path.with_name(ring_path.name + ".lock").stat().st_mode) == 0o600
    reopened = LocalKeyProvider(MASTER_KEY, ring_path)
    assert reopened.key_ids() == tuple(f"local-{n}" for n in range(1, 8))


def test_concurrent_rotations_lose_no_key(ring_path: Path) -> None:
    providers = [LocalKeyProvider(MASTER_KEY, ring_path) for _ in range(4)]
    wrapped: list[WrappedKey] = []

    def rotate_and_wrap(provider: LocalKeyProvider) -> None:
        for _ in range(3):
            provider.rotate()
            wrapped.append(provider.wrap(DEK))

    threads = [threading.Thread(target=rotate_and_wrap, args=(p,)) for p in providers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reopened = LocalKeyProvider(MASTER_KEY, ring_path)
    assert reopened.key_ids() == tuple(f"local-{n}" for n in range(1, 14))
    assert all(reopened.unwrap(key) == DEK for key in wrapped)


def test_relabelled_wrapped_key_is_refused(local_keys: LocalKeyProvider) -> None:
    wrapped = local_keys.wrap(DEK)
    local_keys.rotate()
    with pytest.raises(IntegrityError):
        local_keys.unwrap(WrappedKey("local-2", wrapped.ciphertext))


@pytest.mark.parametrize("key_id", ["local-5", "local-0", "vault:irmsia:v1", ""])
def test_unknown_key_id_raises_unknown_key(local_keys: LocalKeyProvider, key_id: str) -> None:
    wrapped = local_keys.wrap(DEK)
    with pytest.raises(UnknownKey):
        local_keys.unwrap(WrappedKey(key_id, wrapped.ciphertext))


def test_rotation_without_a_ring_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        LocalKeyProvider(MASTER_KEY).rotate()


@pytest.mark.parametrize("key", [b"", b"short", os.urandom(31), os.urandom(33)])
def test_master_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ConfigError):
        LocalKeyProvider(key)


def test_master_key_hex_is_parsed_and_bad_values_are_not_echoed() -> None:
    assert parse_master_key(MASTER_KEY.hex()) == MASTER_KEY
    for bad in ("zz" * 32, "ab" * 31, "SECRETCANARY"):
        with pytest.raises(ConfigError) as caught:
            parse_master_key(bad)
        assert bad not in str(caught.value)


def test_repr_reveals_no_key_material(local_keys: LocalKeyProvider) -> None:
    text = repr(local_keys) + repr(local_keys.wrap(DEK))
    assert MASTER_KEY.hex() not in text
    assert "local-1" in text


def test_registry_builds_the_local_provider(ring_path: Path) -> None:
    provider = create_key_provider("local", master_key=MASTER_KEY, ring_path=ring_path)
    assert isinstance(provider, LocalKeyProvider)
    assert provider.current_key_id() == "local-1"


def test_registry_refuses_an_unknown_provider() -> None:
    with pytest.raises(ConfigError, match="local, vault"):
        create_key_provider("hsm")


# --- the master key from a key file (ENCRYPTION_KEY_FILE) ---------------------------------


def test_key_file_gives_the_same_keks_as_the_key_itself(tmp_path: Path, ring_path: Path) -> None:
    path = tmp_path / "kek.hex"
    path.write_text(MASTER_KEY.hex().upper() + "\n", encoding="ascii")
    path.chmod(0o600)
    key_file = read_master_key_file(path)
    assert key_file.key == MASTER_KEY and key_file.mode == 0o600 and not key_file.exposed
    from_env = LocalKeyProvider(MASTER_KEY, ring_path)
    from_env.rotate()
    wrapped = [LocalKeyProvider(MASTER_KEY).wrap(DEK), from_env.wrap(DEK)]
    from_file = LocalKeyProvider(key_file.key, ring_path)
    assert [from_file.unwrap(w) for w in wrapped] == [DEK, DEK]
    assert MASTER_KEY.hex() not in repr(key_file)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_key_file_readable_by_others_is_reported_as_exposed(tmp_path: Path) -> None:
    path = tmp_path / "kek.hex"
    path.write_text(MASTER_KEY.hex(), encoding="ascii")
    path.chmod(0o644)
    key_file = read_master_key_file(path)
    assert key_file.exposed and key_file.mode == 0o644


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kek.hex"
    path.write_text(MASTER_KEY.hex(), encoding="ascii")
    path.chmod(0o000)
    with pytest.raises(ConfigError) as caught:
        read_master_key_file(path)
    assert str(caught.value) == f"ENCRYPTION_KEY_FILE {path} cannot be read: permission denied"


@pytest.mark.parametrize("content", [b"SECRETCANARY" * 5 + b"ABCD", b"\xff" * 64, MASTER_KEY])
def test_key_file_content_is_never_echoed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "kek.hex"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_master_key_file(path)
    message = str(caught.value)
    assert message.startswith(f"ENCRYPTION_KEY_FILE {path} must hold 64 hex characters")
    assert "SECRETCANARY" not in message and MASTER_KEY.hex() not in message


def test_bootstrap_builds_the_local_provider_from_the_key_file(tmp_path: Path) -> None:
    from irmsia.bootstrap import build_key_provider
    from irmsia.config import load_settings

    path = tmp_path / "kek.hex"
    path.write_text(MASTER_KEY.hex(), encoding="ascii")
    path.chmod(0o600)
    common = {"IRMSIA_ENV": "test", "IRMSIA_DATA_DIR": str(tmp_path / "data")}
    by_file = build_key_provider(load_settings({**common, "ENCRYPTION_KEY_FILE": str(path)}), [])
    by_env = build_key_provider(load_settings({**common, "ENCRYPTION_KEY": MASTER_KEY.hex()}), [])
    assert by_file.unwrap(by_env.wrap(DEK)) == DEK
    assert by_env.unwrap(by_file.wrap(DEK)) == DEK
