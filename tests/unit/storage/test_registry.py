"""The lazy blob-store registry and the S3 store's configuration checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from irmsia.errors import ConfigError, InvalidRequest
from irmsia.storage import BlobStore, create_blob_store, validate_key, validate_prefix
from irmsia.storage.filesystem import FilesystemBlobStore
from irmsia.storage.memory import MemoryBlobStore


def test_registry_builds_the_named_backend(tmp_path: Path) -> None:
    assert isinstance(create_blob_store("memory"), MemoryBlobStore)
    store = create_blob_store("filesystem", root=tmp_path)
    assert isinstance(store, FilesystemBlobStore)
    assert isinstance(store, BlobStore)


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="filesystem, memory, s3"):
        create_blob_store("ftp")


def test_missing_boto3_asks_for_the_s3_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import boto3` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "boto3.session", None)
    with pytest.raises(ConfigError, match=r"install irmsia\[s3\]"):
        create_blob_store("s3", bucket="b")


def test_importing_storage_does_not_import_boto3() -> None:
    code = "import sys, irmsia.storage, irmsia.storage.s3; print('boto3' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "params",
    [
        {"bucket": ""},
        {"bucket": "b", "prefix": "../up"},
        {"bucket": "b", "prefix": "a b"},
        {"bucket": "b", "part_size": 1024},
    ],
)
def test_unsafe_s3_settings_are_config_errors(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        create_blob_store("s3", **params)


def test_key_and_prefix_validators_return_their_input() -> None:
    assert validate_key("objects/ab/k.bin") == "objects/ab/k.bin"
    assert validate_prefix("") == ""
    assert validate_prefix("objects/") == "objects/"
    with pytest.raises(InvalidRequest):
        validate_key("objects/../k.bin")


def test_memory_reader_rejects_a_non_positive_chunk_size() -> None:
    store = MemoryBlobStore()
    store.put("k.bin", b"x")
    with pytest.raises(InvalidRequest):
        store.iter_chunks("k.bin", chunk_size=0)
