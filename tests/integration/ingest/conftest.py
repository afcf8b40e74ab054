"""Fixtures for ingest tests: an app whose pipeline runs inline, and upload helpers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings
from tests.conftest import Accounts, FakeClock, make_settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline")


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Iterator[Container]:
    built = build_container(settings, clock=clock)
    yield built
    built.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def uploader(accounts: Accounts) -> dict[str, str]:
    accounts.create("modality1", "uploader")
    return accounts.headers("modality1")


def upload(
    client: TestClient,
    headers: dict[str, str],
    blobs: Sequence[bytes],
    *,
    wait: bool = True,
    names: Sequence[str] | None = None,
):  # type: ignore[no-untyped-def]
    files = [
        ("files", ((names[i] if names else f"f{i}.dcm"), blob, "application/dicom"))
        for i, blob in enumerate(blobs)
    ]
    return client.post(
        f"/api/v1/dicom/upload?wait={'true' if wait else 'false'}", files=files, headers=headers
    )
