"""Blob store on Amazon S3 or any S3-compatible server (MinIO, Ceph RGW, …).

``boto3`` is optional (``pip install irmsia[s3]``) and imported only when a store is
built, so the rest of IRMSIA imports without it. Each store holds its own boto3 session
and client: nothing is shared through boto3's module-level default session.

``put_stream`` uploads in ``part_size`` parts (multipart upload) once the data exceeds
one part, so a multi-gigabyte object never sits in memory; a failed upload is aborted,
which leaves the previous object in place (S3 replaces objects atomically). With the
default 8 MiB part size an object may be up to about 80 GB (S3 allows 10 000 parts).

botocore errors become ``BlobNotFound`` (missing key) or ``StorageError`` whose message
carries the operation, the key and S3's error code, never credentials or content.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from irmsia.errors import BlobNotFound, ConfigError, StorageError
from irmsia.storage.base import (
    DEFAULT_CHUNK_SIZE,
    BlobReader,
    BytesLike,
    check_range,
    is_valid_key,
    validate_key,
    validate_prefix,
)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 8 * MIB
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def _normalise_prefix(prefix: str) -> str:
    """Return the bucket prefix as ``""`` or ``"segment/…/"``; raise ``ConfigError`` if unsafe."""
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    segments = stripped.split("/")
    if not set(stripped) <= _PREFIX_CHARS or any(seg in ("", ".", "..") for seg in segments):
        raise ConfigError("S3_PREFIX may hold only letters, digits, '.', '_', '-' and '/' separators")
    return stripped + "/"


class S3BlobStore:
    """Blobs as objects in ``bucket`` under an optional ``prefix``.

    Pass ``endpoint_url`` for an S3-compatible server (path-style addressing is then
    used, which MinIO and most others need). Credentials left as ``None`` come from
    boto3's usual chain (environment, profile, instance role). ``client`` replaces the
    client this class would build, for callers that configure boto3 themselves.
    Raises ``ConfigError`` if boto3 is not installed.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3_BUCKET must be set for the S3 blob store")
        if part_size < MIN_PART_SIZE:
            raise ConfigError("S3 part size must be at least 5 MiB")
        self._bucket = bucket
        self._prefix = _normalise_prefix(prefix)
        self._part_size = part_size
        if client is None:
            client = _build_client(
                endpoint_url=endpoint_url or None,
                region=region,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                session_token=session_token,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_attempts=max_attempts,
            )
        self._client = client

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self._bucket!r}, prefix={self._prefix!r})"

    def put(self, key: str, data: BytesLike) -> None:
        """Store ``data`` under ``key`` in one request. Raises ``StorageError``."""
        name = self._object_name(key)
        with self._mapped("put", key):
            self._client.put_object(Bucket=self._bucket, Key=name, Body=_as_body(data))

    def put_stream(self, key: str, chunks: Iterable[BytesLike]) -> int:
        """Upload the concatenated chunks, multipart once they exceed one part; return the size.

        Holds at most one part (plus one incoming chunk) in memory. On any failure the
        multipart upload is aborted so no orphaned parts keep costing storage.
        """
        name = self._object_name(key)
        buffer = bytearray()
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                buffer += chunk
                total += len(chunk)
                while len(buffer) >= self._part_size:
                    if upload_id is None:
                        upload_id = self._start_multipart(key, name)
                    part = bytes(memoryview(buffer)[: self._part_size])
                    del buffer[: self._part_size]
                    parts.append(self._upload_part(key, name, upload_id, len(parts) + 1, part))
            if upload_id is None:
                with self._mapped("put", key):
                    self._client.put_object(Bucket=self._bucket, Key=name, Body=bytes(buffer))
                return total
            if buffer:
                parts.append(self._upload_part(key, name, upload_id, len(parts) + 1, bytes(buffer)))
            with self._mapped("complete multipart upload", key):
                self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            # BaseException on purpose: an interrupted upload must be aborted too;
            # the original exception is always re-raised.
            if upload_id is not None:
                self._abort(name, upload_id)
            raise
        return total

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Return the whole object or a range of it (a ranged GET). Raises ``BlobNotFound`` or
        ``StorageError``."""
        body = self._open(key, offset, length)
        if body is None:
            return b""
        try:
            with self._mapped("get", key):
                data: bytes = body.read()
        finally:
            body.close()
        return data

    def iter_chunks(
        self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE, *, offset: int = 0, length: int | None = None
    ) -> BlobReader:
        """Start a download (of a range, with ``offset``/``length``) and stream it. Raises
        ``BlobNotFound`` at once if missing."""
        body = self._open(key, offset, length)
        if body is None:
            return BlobReader(lambda _size: b"", lambda: None, chunk_size)

        def read(size: int) -> bytes:
            with self._mapped("read", key):
                data: bytes = body.read(size)
            return data

        return BlobReader(read, body.close, chunk_size)

    def _open(self, key: str, offset: int, length: int | None) -> Any:
        """The streaming body of a GET of the range, or None when the range is empty."""
        check_range(offset, length)
        name = self._object_name(key)
        if length == 0:
            self.size(key)  # BlobNotFound for a missing key, as for any other read
            return None
        extra = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"
        from botocore.exceptions import ClientError

        with self._mapped("get", key):
            try:
                return self._client.get_object(Bucket=self._bucket, Key=name, **extra)["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return None  # an offset at or past the end: nothing to read
                raise

    def delete(self, key: str) -> None:
        """Delete the object; S3 treats a missing key as success."""
        name = self._object_name(key)
        with self._mapped("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=name)

    def exists(self, key: str) -> bool:
        """Return whether the object exists (a HEAD request)."""
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Return the object's size in bytes. Raises ``BlobNotFound``."""
        name = self._object_name(key)
        with self._mapped("head", key):
            head = self._client.head_object(Bucket=self._bucket, Key=name)
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys starting with ``prefix`` in ascending order (S3's listing order), lazily."""
        validate_prefix(prefix)
        return self._list(self._prefix + prefix)

    def check_writable(self) -> None:
        """Put and delete a probe object. Raises ``StorageError`` (no access, no bucket, …)."""
        probe = f"{self._prefix}.probe-{secrets.token_hex(8)}"
        with self._mapped("readiness probe", "(probe)"):
            self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"probe")
            self._client.delete_object(Bucket=self._bucket, Key=probe)

    def _object_name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _list(self, full_prefix: str) -> Iterator[str]:
        with self._mapped("list", "(listing)"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self._prefix) :]
                    # Probe objects and foreign objects are not valid keys: skip them.
                    if is_valid_key(key):
                        yield key

    def _start_multipart(self, key: str, name: str) -> str:
        with self._mapped("start multipart upload", key):
            response = self._client.create_multipart_upload(Bucket=self._bucket, Key=name)
        upload_id: str = response["UploadId"]
        return upload_id

    def _upload_part(self, key: str, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        with self._mapped("upload part", key):
            response = self._client.upload_part(
                Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
            )
        part: dict[str, Any] = {"ETag": response["ETag"], "PartNumber": number}
        # When botocore sent a checksum with the part, completion must repeat it.
        for field in (
            "ChecksumCRC32",
            "ChecksumCRC32C",
            "ChecksumCRC64NVME",
            "ChecksumSHA1",
            "ChecksumSHA256",
        ):
            if field in response:
                part[field] = response[field]
        return part

    def _abort(self, name: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # The original failure matters more; a bucket lifecycle rule should clean up
        # incomplete uploads that this abort could not.
        with contextlib.suppress(BotoCoreError, ClientError):
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)

    @contextmanager
    def _mapped(self, operation: str, key: str) -> Iterator[None]:
        """Translate botocore exceptions into IRMSIA's storage errors, in one place."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "")) or "unknown"
            if code in _NOT_FOUND_CODES:
                raise BlobNotFound(f"no blob under key {key}") from exc
            raise StorageError(f"S3 {operation} failed for key {key} ({code})") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {operation} failed for key {key} ({type(exc).__name__})") from exc


def _as_body(data: BytesLike) -> bytes | bytearray:
    # botocore accepts bytes and bytearray bodies but not memoryview.
    return data.tobytes() if isinstance(data, memoryview) else data


def _build_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_attempts: int,
) -> Any:
    """Build a boto3 S3 client in a private session. Raises ``ConfigError`` without boto3."""
    try:
        import boto3.session
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError("install irmsia[s3] for the S3 blob store") from exc
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)
