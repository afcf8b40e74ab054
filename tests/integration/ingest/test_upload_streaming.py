"""Uploads stream: a large body never sits in the server's memory, and the size limits refuse
what is too large while reading, storing nothing of it.

The request bodies are generated on the fly by the client (an async generator that yields a
fresh 1 MiB piece at a time), sent through httpx's ASGI transport, which hands the body to the
app piece by piece as the app reads it (Starlette's TestClient would read the whole body
first). Memory is measured with ``tracemalloc`` in this process while the request runs: it
counts live allocations, not time, so the bound holds on any machine. A piece the server has
dropped is freed at once; a server that buffered the body, kept its pieces, or held a whole
object would exceed the bound several times over.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.usecases import ingest as ingest_usecase
from tests.conftest import TEST_PASSWORD, FakeClock, count_rows, make_settings
from tests.factories import make_cr, make_ct, to_bytes
from tests.support import CLI_CTX

MiB = 1 << 20
BOUNDARY = b"irmsia-test-boundary-7d3c2a"
# What the server may hold at once, whatever the body's size: the window of one object that
# the use case may keep in memory while it decides between memory and the spool, plus room
# for the request's other objects being processed and the parser's pieces.
IN_MEMORY_WINDOW = int(getattr(ingest_usecase, "IN_MEMORY_MAX", 0))
MEMORY_BOUND = IN_MEMORY_WINDOW + 48 * MiB


def padded_dicom(total: int) -> Callable[[], Iterator[bytes]]:
    """A valid CT file of about ``total`` bytes: a small slice, then Data Set Trailing Padding.

    (FFFC,FFFC) is the one element allowed after Pixel Data, so the file can be produced as
    a stream: the slice, an OB element header, then the padding in 1 MiB pieces. The
    de-identifier removes the padding (PS3.15 Table E.1-1: X).
    """
    head = to_bytes(make_ct(rows=16, columns=16, phi_extras=False))
    padding = max(total - len(head) - 12, 0) & ~1

    def pieces() -> Iterator[bytes]:
        yield head + struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, padding)
        left = padding
        while left >= MiB:
            yield b"\x5a" * MiB  # a new object each time: keeping pieces would show as memory
            left -= MiB
        if left:
            yield b"\x5a" * left

    return pieces


def whole(blob: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter((blob,))


@dataclass
class Body:
    """A multipart/form-data body produced as it is sent; counts what the server pulled."""

    parts: list[Callable[[], Iterable[bytes]]]
    sent: int = 0
    finished: bool = False
    size: int = field(init=False, default=0)

    async def stream(self) -> AsyncIterator[bytes]:
        for number, part in enumerate(self.parts, start=1):
            yield self._count(
                b"--" + BOUNDARY + b"\r\n"
                b'Content-Disposition: form-data; name="files"; filename="f%d.dcm"\r\n'
                b"Content-Type: application/dicom\r\n\r\n" % number
            )
            for piece in part():
                yield self._count(piece)
            yield self._count(b"\r\n")
        yield self._count(b"--" + BOUNDARY + b"--\r\n")
        self.finished = True

    def _count(self, piece: bytes) -> bytes:
        self.sent += len(piece)
        return piece


@dataclass
class Upload:
    status: int
    json: dict[str, object]
    peak: int
    body: Body


def post(container: Container, body: Body, *, wait: bool = True, login_only: bool = False) -> Upload:
    """POST ``body`` (chunked: no Content-Length) through the ASGI app, tracing memory.

    Creates the uploader account first, unless ``login_only`` (it exists already).
    """

    async def run() -> Upload:
        transport = httpx.ASGITransport(app=create_app(container=container), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            login = await client.post(
                "/api/v1/auth/login", data={"username": "modality1", "password": TEST_PASSWORD}
            )
            token = login.json()["access_token"]
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                response = await client.post(
                    f"/api/v1/dicom/upload?wait={'true' if wait else 'false'}",
                    content=body.stream(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}",
                    },
                )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        return Upload(response.status_code, response.json(), peak, body)

    if not login_only:
        container.accounts.create(CLI_CTX, "modality1", "uploader", TEST_PASSWORD)
    return asyncio.run(run())


def spooled(container: Container) -> list[str]:
    return list(container.blobs.list("spool/"))


@pytest.mark.slow
def test_a_300_mb_upload_is_stored_without_the_server_holding_it(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    # Jobs run in a worker process, so what this process holds is the upload path alone:
    # HTTP body → multipart parser → use case → encryption → spool, and the answer.
    settings = make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="process", INGEST_WORKERS="1")
    container = build_container(settings, clock=clock)
    try:
        body = Body([padded_dicom(300 * MiB)])
        upload = post(container, body)
        assert upload.status == 200, upload.json
        (item,) = upload.json["files"]  # type: ignore[attr-defined]
        assert item["status"] == "stored"
        assert body.finished and body.sent > 300 * MiB - MiB
        assert upload.peak < MEMORY_BOUND < body.sent // 3, f"peak {upload.peak / MiB:.0f} MiB"
        assert count_rows(container, "instances") == 1
        assert spooled(container) == []  # the spool is deleted once the job is done
        stored = container.retrieve.download(CLI_CTX, item["image_id"], "dicom")
        ds = pydicom.dcmread(io.BytesIO(b"".join(stored.chunks)))
        assert 0xFFFCFFFC not in ds and ds.Rows == 16  # the padding went, the image stayed
    finally:
        container.close()


def test_an_object_over_max_object_bytes_is_rejected_and_the_others_are_stored(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    settings = make_settings(
        tmp_path / "data", db_url, INGEST_EXECUTOR="inline", MAX_OBJECT_BYTES=str(64 * MiB)
    )
    container = build_container(settings, clock=clock)
    try:
        body = Body(
            [
                whole(to_bytes(make_ct(phi_extras=False))),
                padded_dicom(100 * MiB),
                whole(to_bytes(make_cr())),
            ]
        )
        upload = post(container, body)
        assert upload.status == 200, upload.json
        files: list[dict[str, object]] = upload.json["files"]  # type: ignore[assignment]
        assert [f["status"] for f in files] == ["stored", "rejected", "stored"]
        assert files[1]["error"] == "payload_too_large"
        assert str(64 * MiB) in str(files[1]["message"])
        assert upload.json["summary"] == {
            "stored": 2,
            "duplicate": 0,
            "quarantined": 0,
            "rejected": 1,
            "pending": 0,
        }
        assert body.finished  # the rest of the big object was read past, then the last file
        assert upload.peak < MEMORY_BOUND
        assert count_rows(container, "instances") == 2
        assert count_rows(container, "jobs") == 2  # the refused object never became a job
        assert spooled(container) == []  # and left no spooled bytes
    finally:
        container.close()


@pytest.mark.parametrize("wait", [True, False])
def test_a_body_over_max_upload_bytes_is_refused_part_way_and_nothing_is_stored(
    tmp_path: Path, db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, wait: bool
) -> None:
    settings = make_settings(
        tmp_path / "data", db_url, INGEST_EXECUTOR="inline", MAX_UPLOAD_BYTES=str(40 * MiB)
    )
    container = build_container(settings, clock=clock)
    try:
        body = Body([padded_dicom(200 * MiB)])
        with caplog.at_level(logging.INFO):
            upload = post(container, body, wait=wait)
        assert upload.status == 413
        assert upload.json["error"] == "payload_too_large"
        assert str(40 * MiB) in str(upload.json["detail"])
        # Refused while reading: the client was not made to send the rest.
        assert not body.finished and body.sent < 60 * MiB
        assert count_rows(container, "jobs") == 0
        assert count_rows(container, "instances") == 0
        assert spooled(container) == []
        # The server noticed the end of the body cleanly: no unhandled error, no traceback.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    finally:
        container.close()


def test_objects_received_in_full_before_the_upload_limit_was_reached_are_kept(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    """The body streams, so an object received in full is processed before the limit is known
    to be exceeded; it is stored whole (a re-upload reports it as a duplicate), and only the
    object being read when the limit was reached is dropped without a trace."""
    settings = make_settings(
        tmp_path / "data", db_url, INGEST_EXECUTOR="inline", MAX_UPLOAD_BYTES=str(40 * MiB)
    )
    container = build_container(settings, clock=clock)
    try:
        first = to_bytes(make_ct(phi_extras=False))
        upload = post(container, Body([whole(first), padded_dicom(200 * MiB)]))
        assert upload.status == 413 and not upload.body.finished
        assert count_rows(container, "jobs") == 1 and count_rows(container, "instances") == 1
        assert count_rows(container, "stored_objects") == 3  # DICOM, PNG, thumbnail: complete
        assert spooled(container) == []
        again = post(container, Body([whole(first)]), login_only=True)
        assert again.status == 200 and again.json["files"][0]["status"] == "duplicate"  # type: ignore[index]
    finally:
        container.close()
