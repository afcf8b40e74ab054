"""Servers and backends for the contract suites.

``s3_server`` runs moto's S3-compatible server on 127.0.0.1 (a free port) for the whole
session; ``blob_store`` yields each blob-store backend in turn, the S3 one against that
real HTTP server with a fresh bucket per test.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from irmsia.storage import BlobStore, create_blob_store

BLOB_STORE_KINDS = ["memory", "filesystem", "s3"]
S3_PART_SIZE = 5 * 1024 * 1024  # S3's minimum, so multipart uploads start early


@dataclass
class S3Server:
    """Where the loopback S3 server listens, credentials it accepts, and an admin client."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A boto3 client for test set-up and inspection (built once: clients are slow to make)."""
        if self._client is None:
            import boto3.session

            session = boto3.session.Session(
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                region_name=self.region,
            )
            self._client = session.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def new_bucket(self) -> str:
        name = f"contract-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store(self, bucket: str, **params: Any) -> BlobStore:
        return create_blob_store(
            "s3",
            bucket=bucket,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            **params,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; keep the test output readable.
    werkzeug_log = logging.getLogger("werkzeug")
    previous_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
        werkzeug_log.setLevel(previous_level)


@pytest.fixture(params=BLOB_STORE_KINDS)
def blob_store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def blob_store(blob_store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    """A fresh, empty store of each kind."""
    if blob_store_kind == "memory":
        return create_blob_store("memory")
    if blob_store_kind == "filesystem":
        return create_blob_store("filesystem", root=tmp_path / "blobs")
    server: S3Server = request.getfixturevalue("s3_server")
    # The shared client keeps the suite fast; tests/contract's S3-specific tests and
    # tests/unit/storage cover the client the store builds itself.
    return server.store(
        server.new_bucket(), prefix="tenant-a", part_size=S3_PART_SIZE, client=server.client()
    )
