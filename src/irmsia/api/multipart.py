"""Streaming multipart/form-data reading for uploads: one file part at a time, never buffered whole.

Starlette's own form parser spools large files to temporary files in clear; this one
feeds the request body through python-multipart's push parser and hands out each file
part as an iterator of byte pieces, pulled from the request as the consumer reads, so an
upload of any size passes through in bounded memory and straight into encryption.

``file_parts`` runs in a worker thread (a sync route); it pulls body chunks from the
event loop with ``anyio.from_thread``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator

import anyio.from_thread
from python_multipart.multipart import MultipartParser, parse_options_header

from irmsia.errors import InvalidRequest, UnsupportedMediaType

MAX_PARTS = 100_000


BATCH_BYTES = 1 << 20


async def _next_batch(stream: AsyncIterator[bytes]) -> bytes | None:
    """Up to about 1 MiB of body: one thread hop per batch, not per small network chunk."""
    pieces: list[bytes] = []
    size = 0
    while size < BATCH_BYTES:
        try:
            piece = await stream.__anext__()
        except StopAsyncIteration:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces) if pieces else None


def body_pieces(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull an async body stream from a worker thread, in batches of about 1 MiB."""
    while True:
        piece = anyio.from_thread.run(_next_batch, stream)
        if piece is None:
            return
        if piece:
            yield piece


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary, or ``UnsupportedMediaType``."""
    media, params = parse_options_header(content_type or "")
    if media != b"multipart/form-data":
        raise UnsupportedMediaType("expected multipart/form-data with one or more file parts")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body without a boundary")
    return boundary


class _Events:
    """Collects parser callbacks as a queue of events."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, bytes]] = deque()
        self._field = b""
        self._value = b""
        self.headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": lambda: self.queue.append(("end", b"")),
        }

    def _begin(self) -> None:
        self.headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        disposition = self.headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        self.queue.append(("file" if b"filename" in params else "field", b""))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.queue.append(("data", bytes(data[start:end])))


def file_parts(pieces: Iterator[bytes], boundary: bytes) -> Iterator[Iterator[bytes]]:
    """Yield each file part's content as an iterator; form fields are skipped.

    Each part's iterator must be consumed (or abandoned) before asking for the next part;
    anything left unread is drained. Malformed bodies raise ``InvalidRequest``.
    """
    events = _Events()
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]

    def next_event() -> tuple[str, bytes] | None:
        while not events.queue:
            piece = next(pieces, None)
            if piece is None:
                try:
                    parser.finalize()
                except ValueError:
                    raise InvalidRequest("the multipart body is truncated or malformed") from None
                return events.queue.popleft() if events.queue else None
            try:
                parser.write(piece)
            except ValueError:
                raise InvalidRequest("the multipart body is malformed") from None
        return events.queue.popleft()

    def content() -> Iterator[bytes]:
        while (event := next_event()) is not None and event[0] == "data":
            yield event[1]

    count = 0
    while (event := next_event()) is not None:
        if event[0] != "file":
            continue
        count += 1
        if count > MAX_PARTS:
            raise InvalidRequest(f"at most {MAX_PARTS} files per request")
        part = content()
        yield part
        for _ in part:  # drain what the consumer left
            pass
