"""Ingest: accept DICOM objects from any front door, spool them encrypted, run the pipeline.

Every front door (REST upload, CLI, DICOMweb, C-STORE, watched folder) hands this use case
an iterable of ``IncomingFile`` (pieces of bytes, never a file name). Zip archives are
expanded as a stream. Each object becomes one durable job record. Its input is spooled in
memory or encrypted, never written anywhere in clear:

- with ``wait=False`` (the caller is told "accepted" before the work is done) every object
  is encrypted while it is received (chunked AES-256-GCM) into the blob store's ``spool/``
  area, so an accepted job survives a crash and is resumed at start-up;
- with ``wait`` (the synchronous answer of the original design) an object of up to
  ``IN_MEMORY_MAX`` bytes is handed to the executor in memory: the request that sent it is
  still open, so a crash loses nothing the client was told was stored (the job is marked
  ``interrupted`` at start-up), and the spool's write, fsync, read and delete are saved.
  Larger objects are spooled as above. At most ``IN_FLIGHT_BYTES`` of in-memory input wait
  for the executor at once; reading the request pauses until they have been processed.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session, sessionmaker
from stream_unzip import UnzipError, stream_unzip

from irmsia.clock import Clock
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.db.base import new_id
from irmsia.db.engine import transaction
from irmsia.db.jobs import MAX_ATTEMPTS, Job
from irmsia.errors import InvalidDicom, IrmsiaError, NotFound, PayloadTooLarge
from irmsia.pipeline.executors import Executor
from irmsia.pipeline.job import JobState, spool_key
from irmsia.pipeline.runner import Outcome, Ticket
from irmsia.security.policy import Permission, authorize
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.audit import Outcome as AuditOutcome
from irmsia.usecases.context import RequestContext

ZIP_MAGIC = b"PK\x03\x04"
INGEST = "ingest"
IN_MEMORY_MAX = 32 << 20  # objects up to this size skip the spool when the caller waits
IN_FLIGHT_BYTES = 256 << 20  # in-memory input handed to the executor and not yet processed
GROUP_FILES = 16  # jobs recorded in one transaction, then queued together
GROUP_BYTES = 32 << 20  # …or fewer, once their in-memory input reaches this size
_JOBS: Table = Job.__table__  # type: ignore[assignment]
_NEW_JOB = insert(_JOBS)


@dataclass(frozen=True)
class IncomingFile:
    """One object as received: its bytes in pieces, and its position in the request."""

    data: Iterable[bytes]
    label: str  # "3" or "3/12" (archive 3, member 12): positions, never names


@dataclass
class FileResult:
    label: str
    job_id: str | None = None
    state: str = JobState.PENDING.value
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    detail: str | None = None


@dataclass
class Batch:
    batch_id: str
    files: list[FileResult]

    @property
    def counts(self) -> dict[str, int]:
        counts = {"stored": 0, "duplicate": 0, "quarantined": 0, "rejected": 0, "pending": 0}
        for item in self.files:
            if item.error:
                counts["rejected"] += 1
            elif item.state != JobState.SUCCEEDED.value:
                counts["pending"] += 1
            else:
                counts[item.result.get("status", "stored")] += 1
        return counts


@dataclass
class Ingest:
    sessions: sessionmaker[Session]
    blobs: BlobStore
    cipher: EnvelopeCipher
    executor: Executor
    clock: Clock
    audit: AuditLog
    max_object_bytes: int
    options: dict[str, Any] = field(default_factory=dict)
    # Jobs recorded per transaction; 1 queues each job before the next object is read.
    group_files: int = GROUP_FILES

    def submit(
        self,
        ctx: RequestContext,
        files: Iterable[IncomingFile],
        *,
        wait: bool = True,
        validation: str | None = None,
    ) -> Batch:
        """Spool and queue every object; with ``wait``, run them to completion first.

        ``validation`` (strict | lenient) overrides the deployment's policy for this call.
        One bad object never fails the others: its problem is reported in its own result.
        """
        options = dict(self.options)
        if validation is not None:
            options["validation"] = validation
        authorize(ctx.principal, Permission.UPLOAD_IMAGES)
        batch = Batch(batch_id=new_id(), files=[])
        handover = _Handover(self.executor, self.group_files)
        try:
            for received in files:
                try:
                    for incoming in expand_archive(received):
                        item = FileResult(label=incoming.label)
                        batch.files.append(item)
                        try:
                            ticket, row = self._receive(
                                ctx, batch.batch_id, incoming, options, in_memory=wait
                            )
                        except IrmsiaError as exc:
                            _reject(item, exc)
                            continue
                        item.job_id = ticket.job_id
                        handover.add(item, ticket, row)
                        if handover.full:
                            self._hand_over(handover)
                except InvalidDicom as exc:  # a broken archive: its remaining members are lost
                    batch.files.append(_reject(FileResult(label=received.label), exc))
        except BaseException:
            # The request broke off (e.g. over its size limit): the objects received in full
            # are processed as usual.
            self._hand_over(handover)
            raise

        def submitted(session: Session, queued: int) -> None:
            self.audit.record(
                session,
                ctx,
                "ingest.submit",
                resource_type="batch",
                resource_id=batch.batch_id,
                outcome=AuditOutcome.SUCCESS if queued else AuditOutcome.FAILURE,
                detail={"objects": len(batch.files), "queued": queued},
            )

        # The last jobs' records and the submission's audit record: one transaction (a
        # one-file upload writes once before its job runs). If it fails, its jobs are
        # rejected and the record, alone, counts only the jobs queued before.
        queued = len(handover.futures) + len(handover.waiting)
        if not self._hand_over(handover, also=lambda session: submitted(session, queued)):
            with transaction(self.sessions) as session:
                submitted(session, len(handover.futures))
        if wait:
            for item, future in handover.futures:
                _apply(item, future.result())
        return batch

    def _hand_over(self, handover: _Handover, also: Callable[[Session], None] | None = None) -> bool:
        """Record the waiting jobs (and ``also``) in one transaction, then queue the jobs.

        Returns False when that transaction failed with an ``IrmsiaError``: the waiting
        objects are then rejected with it and ``also`` was not recorded. Any other error is
        raised. Either way the failed jobs' spools are deleted.
        """
        waiting, handover.waiting, handover.bytes = handover.waiting, [], 0
        if not waiting and also is None:
            return True
        try:
            with transaction(self.sessions) as session:
                if waiting:
                    session.execute(_NEW_JOB, [row for _item, _ticket, row in waiting])
                if also is not None:
                    also(session)
        except BaseException as exc:
            for item, _ticket, row in waiting:
                if row["spool_key"]:
                    self.blobs.delete(row["spool_key"])
                item.job_id = None
                if isinstance(exc, IrmsiaError):
                    _reject(item, exc)
            if not isinstance(exc, IrmsiaError):
                raise
            return False
        for item, ticket, _row in waiting:
            handover.queue(item, ticket)
        return True

    def job(self, ctx: RequestContext, job_id: str) -> Job:
        """A job record (uploaders see their own jobs; admins and radiologists see all).

        Audited as ``job.read``: its result names the image, study and patient pseudonym.
        """
        principal = authorize(ctx.principal, Permission.READ_JOBS)
        with transaction(self.sessions) as session:
            job = session.get(Job, job_id)
            if job is None or (
                not principal.can(Permission.MANAGE_JOBS) and job.submitted_by != principal.id
            ):
                raise NotFound("no such job")
            self.audit.record(session, ctx, "job.read", resource_type="job", resource_id=job.id)
            return job

    def _receive(
        self,
        ctx: RequestContext,
        batch_id: str,
        incoming: IncomingFile,
        options: dict[str, Any],
        *,
        in_memory: bool,
    ) -> tuple[Ticket, dict[str, Any]]:
        """Read one object, in memory when allowed and small, else spooled; return its ticket
        and the job's row (``_hand_over`` records it)."""
        job_id = new_id()
        counter = _Counter(incoming.data, self.max_object_bytes)
        try:
            head: list[bytes] = []
            if in_memory:
                for piece in counter:
                    head.append(piece)
                    if counter.total > IN_MEMORY_MAX:
                        break
                else:
                    if counter.total == 0:
                        raise InvalidDicom("the file is empty", reason="empty")
                    payload = b"".join(head)
                    del head
                    row = self._job(ctx, job_id, batch_id, options, len(payload))
                    return Ticket(job_id, payload, len(payload)), row
            return self._spool(ctx, batch_id, job_id, itertools.chain(head, counter), counter, options)
        except BaseException:
            for _ in counter.rest():  # drain, so the next object of the request can be read
                pass
            raise

    def _spool(
        self,
        ctx: RequestContext,
        batch_id: str,
        job_id: str,
        pieces: Iterator[bytes],
        counter: _Counter,
        options: dict[str, Any],
    ) -> tuple[Ticket, dict[str, Any]]:
        key = spool_key(job_id)
        sealed = self.cipher.encrypt_stream(f"spool:{job_id}", pieces)
        try:
            self.blobs.put_stream(key, sealed.chunks)
            if counter.total == 0:
                raise InvalidDicom("the file is empty", reason="empty")
        except BaseException:
            self.blobs.delete(key)
            raise
        row = self._job(ctx, job_id, batch_id, options, counter.total)
        row.update(
            spool_key=key,
            spool_key_id=sealed.wrapped_key.key_id,
            spool_wrapped_key=sealed.wrapped_key.ciphertext,
        )
        return Ticket(job_id, None, counter.total), row

    def _job(
        self, ctx: RequestContext, job_id: str, batch_id: str, options: dict[str, Any], size: int
    ) -> dict[str, Any]:
        """A new job's row (every column: one compiled INSERT serves every job)."""
        return {
            "id": job_id,
            "kind": INGEST,
            "state": JobState.PENDING.value,
            "step": None,
            "attempt": 0,
            "max_attempts": MAX_ATTEMPTS,
            "batch_id": batch_id,
            "submitted_by": ctx.actor_id,
            "spool_key": None,
            "spool_key_id": None,
            "spool_wrapped_key": None,
            "input_size": size,
            "options": json.dumps(options, sort_keys=True),
            "result": "{}",
            "timings": "{}",
            "error_code": None,
            "error_detail": None,
            "created_at": self.clock(),
            "started_at": None,
            "finished_at": None,
        }


class _Handover:
    """Jobs received but not yet recorded, and the queued jobs' futures.

    Jobs are recorded a group at a time (one transaction for up to ``Ingest.group_files``
    jobs or ``GROUP_BYTES`` of in-memory input), then queued; ``queue`` bounds the in-memory input
    the executor holds (``IN_FLIGHT_BYTES``), waiting for earlier jobs when over it.
    """

    def __init__(self, executor: Executor, group_files: int) -> None:
        self._executor = executor
        self._group_files = group_files
        self.waiting: list[tuple[FileResult, Ticket, dict[str, Any]]] = []
        self.bytes = 0  # in-memory input of the waiting jobs
        self.futures: list[tuple[FileResult, Future[Outcome]]] = []
        self._in_flight: deque[tuple[Future[Outcome], int]] = deque()
        self._held = 0

    @property
    def full(self) -> bool:
        return len(self.waiting) >= self._group_files or self.bytes >= GROUP_BYTES

    def add(self, item: FileResult, ticket: Ticket, row: dict[str, Any]) -> None:
        self.waiting.append((item, ticket, row))
        if ticket.payload is not None:
            self.bytes += ticket.size

    def queue(self, item: FileResult, ticket: Ticket) -> None:
        future = self._executor.submit(ticket.job_id, ticket.payload, ticket.size)
        self.futures.append((item, future))
        if ticket.payload is None:
            return
        self._in_flight.append((future, ticket.size))
        self._held += ticket.size
        while self._in_flight and (self._held > IN_FLIGHT_BYTES or self._in_flight[0][0].done()):
            done, size = self._in_flight.popleft()
            done.exception()  # waits; the outcome itself is read by the caller
            self._held -= size


class _Counter(Iterator[bytes]):
    """Pass pieces through, counting bytes; refuse to go past the limit."""

    def __init__(self, pieces: Iterable[bytes], limit: int) -> None:
        self._pieces = iter(pieces)
        self._limit = limit
        self.total = 0

    def rest(self) -> Iterator[bytes]:
        return self._pieces

    def __next__(self) -> bytes:
        piece = next(self._pieces)
        self.total += len(piece)
        if self.total > self._limit:
            raise PayloadTooLarge(f"object exceeds the limit of {self._limit} bytes")
        return piece


def expand_archive(incoming: IncomingFile) -> Iterator[IncomingFile]:
    """Yield the object itself or, for a zip archive (recognised by content, not name), its members.

    Members are streamed: nothing is extracted to disk. Folders and empty members are
    skipped. Each member must be consumed before the next is produced. A corrupt archive
    raises ``InvalidDicom`` (reason ``bad_archive``).
    """
    pieces = iter(incoming.data)
    first = b""
    for piece in pieces:
        first += piece
        if len(first) >= 4:
            break
    rest = _chain(first, pieces)
    if not first.startswith(ZIP_MAGIC):
        yield IncomingFile(data=rest, label=incoming.label)
        return
    yield from _members(rest, incoming.label)


def _members(archive: Iterator[bytes], label: str) -> Iterator[IncomingFile]:
    number = 0
    try:
        for name, size, chunks in stream_unzip(archive):
            if name.endswith(b"/") or size == 0:
                for _ in chunks:  # the member must be consumed to reach the next one
                    pass
                continue
            number += 1
            yield IncomingFile(data=_guard(chunks), label=f"{label}/{number}")
    except UnzipError:
        raise InvalidDicom(
            "the zip archive is corrupt or uses an unsupported feature", reason="bad_archive"
        ) from None


def _guard(chunks: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except UnzipError:
        raise InvalidDicom(
            "the zip archive is corrupt or uses an unsupported feature", reason="bad_archive"
        ) from None


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _reject(item: FileResult, exc: IrmsiaError) -> FileResult:
    item.state, item.detail = JobState.FAILED.value, exc.detail
    item.error = exc.reason if isinstance(exc, InvalidDicom) else exc.code
    return item


def _apply(item: FileResult, outcome: Outcome) -> None:
    item.state = outcome.state.value
    item.result = outcome.result
    if outcome.failure is not None and outcome.state is JobState.FAILED:
        item.error, item.detail = outcome.failure.code, outcome.failure.detail
