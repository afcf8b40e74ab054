"""Group commit: jobs queued while the workers are busy run as one batch with one commit.

Each test drives a real executor (threads, or worker processes) over the real pipeline and
database, and looks at what the batches did: how many jobs each held, which commits
happened, and that one job's failure never touches the others of its batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import insert, select

from irmsia.bootstrap import Container
from irmsia.db.engine import transaction
from irmsia.db.imaging import StoredObject
from irmsia.db.jobs import Job
from irmsia.errors import StorageError
from irmsia.pipeline import executors
from irmsia.pipeline.job import JobState
from irmsia.pipeline.runner import Outcome, Ticket
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import count_rows
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX


def _slices(count: int) -> list[bytes]:
    return [to_bytes(make_ct(seed=n + 1)) for n in range(count)]


def _files(blobs: Sequence[bytes]) -> list[IncomingFile]:
    return [IncomingFile(data=[blob], label=str(n)) for n, blob in enumerate(blobs, 1)]


class _Recorder:
    """Wraps ``runner.run_batch``: records each batch's size; the first batch can be held."""

    def __init__(self, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.hold.set()
        original = container.runner.run_batch

        def run_batch(tickets: Sequence[Ticket]) -> Any:
            self.sizes.append(len(tickets))
            self.holding.set()
            self.hold.wait(30)
            return original(tickets)

        monkeypatch.setattr(container.runner, "run_batch", run_batch)

    def blocked_by(
        self, threads: executors.ThreadExecutor, container: Container, blob: bytes
    ) -> Future[Outcome]:
        """Submit one job whose batch waits until ``hold.set()``, so the next jobs queue up."""
        self.hold.clear()
        blocker = threads.submit(*_ticket(container, blob))
        assert self.holding.wait(10)
        return blocker


@pytest.fixture
def threads(container: Container) -> Iterator[executors.ThreadExecutor]:
    pool = executors.ThreadExecutor(container.runner, 1)
    container.ingest.executor = pool
    yield pool
    pool.close()


def test_jobs_queued_behind_a_busy_worker_are_committed_together(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(container, monkeypatch)
    recorder.hold.clear()  # the first batch waits, so the other nine queue up behind it
    blobs = _slices(10)
    first = threads.submit(*_ticket(container, blobs[0]))
    assert recorder.holding.wait(10)
    rest = [threads.submit(*_ticket(container, blob)) for blob in blobs[1:]]
    recorder.hold.set()
    outcomes = [future.result(30) for future in [first, *rest]]
    assert {outcome.state for outcome in outcomes} == {JobState.SUCCEEDED}
    assert recorder.sizes == [1, 9]
    assert count_rows(container, "instances") == 10
    with container.sessions() as session:
        timings = [job.timings for job in session.scalars(select(Job)).all()]
    # The nine of the second batch share one commit, so they report the same commit time.
    commit_times = [json.loads(t)["index"] for t in timings]
    assert max(commit_times.count(value) for value in commit_times) == 9


def _ticket(container: Container, blob: bytes) -> tuple[str, bytes, int]:
    ticket, row = container.ingest._receive(
        CLI_CTX, "batch", IncomingFile(data=[blob], label="1"), {}, in_memory=True
    )
    assert ticket.payload is not None
    with transaction(container.sessions) as session:  # what Ingest.submit records
        session.execute(insert(Job), [row])
    return ticket.job_id, ticket.payload, ticket.size


def test_a_bad_object_fails_alone_and_the_rest_of_its_batch_is_stored(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(container, monkeypatch)
    blobs = _slices(4)
    blocker = recorder.blocked_by(threads, container, blobs[0])
    queued = [
        threads.submit(*_ticket(container, blob)) for blob in [blobs[1], b"\x00" * 300, blobs[2], blobs[3]]
    ]
    recorder.hold.set()
    outcomes = [future.result(30) for future in [blocker, *queued]]
    assert recorder.sizes == [1, 4]
    assert [outcome.state for outcome in outcomes] == [JobState.SUCCEEDED] * 2 + [JobState.FAILED] + [
        JobState.SUCCEEDED
    ] * 2
    assert outcomes[2].failure is not None and outcomes[2].failure.code == "not_dicom"
    assert count_rows(container, "instances") == 4


def test_a_commit_that_fails_for_one_job_is_retried_job_by_job(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from irmsia.pipeline.ingest import IngestPipeline

    recorder = _Recorder(container, monkeypatch)
    blobs = _slices(4)
    blocker = recorder.blocked_by(threads, container, blobs[0])
    poisoned = _ticket(container, blobs[2])
    original = IngestPipeline._index

    def index(self, session, todo, now):  # type: ignore[no-untyped-def]
        if any(state.job_id == poisoned[0] for state in todo):
            raise RuntimeError("this job cannot be indexed")
        return original(self, session, todo, now)

    monkeypatch.setattr(IngestPipeline, "_index", index)
    queued = [
        threads.submit(*_ticket(container, blobs[1])),
        threads.submit(*poisoned),
        threads.submit(*_ticket(container, blobs[3])),
    ]
    recorder.hold.set()
    outcomes = [future.result(30) for future in queued]
    blocker.result(30)
    assert [outcome.state for outcome in outcomes] == [
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.SUCCEEDED,
    ]
    assert count_rows(container, "instances") == 3
    # The failed job wrote its blobs before the commit; its abort deleted them.
    with container.sessions() as session:
        job = session.get(Job, poisoned[0])
        assert job is not None and job.step == "index"
    stored_keys = {key for key in container.blobs.list("objects/") if poisoned[0] in key}
    assert stored_keys == set()


def test_a_jobs_blob_writes_overlap_the_next_jobs_steps_and_fail_it_alone(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from irmsia.pipeline.ingest import IngestPipeline

    recorder = _Recorder(container, monkeypatch)
    blobs = _slices(4)
    blocker = recorder.blocked_by(threads, container, blobs[0])
    tickets = [_ticket(container, blob) for blob in blobs[1:]]
    poisoned, following = tickets[0][0], tickets[1][0]
    next_job_started = threading.Event()
    overlapped: list[bool] = []
    original_validate, original_put_stream = IngestPipeline.validate, container.blobs.put_stream

    def validate(self, state):  # type: ignore[no-untyped-def]
        if state.job_id == following:
            next_job_started.set()
        return original_validate(self, state)

    def put_stream(key, parts):  # type: ignore[no-untyped-def]
        if poisoned in key:
            # Still writing when the next job's first step runs; the blob is there, then the
            # disk fails (as a failed flush after the data was written would).
            overlapped.append(next_job_started.wait(10))
            original_put_stream(key, parts)
            raise StorageError("filesystem blob store could not write key (test): No space left on device")
        return original_put_stream(key, parts)

    monkeypatch.setattr(IngestPipeline, "validate", validate)
    monkeypatch.setattr(container.blobs, "put_stream", put_stream)
    queued = [threads.submit(*ticket) for ticket in tickets]
    recorder.hold.set()
    outcomes = [future.result(30) for future in queued]
    blocker.result(30)
    assert overlapped[0]  # the first attempt ran in the batch; the retries (retryable) alone
    assert [outcome.state for outcome in outcomes] == [
        JobState.FAILED,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    assert outcomes[0].failure is not None and outcomes[0].failure.code == "storage_error"
    with container.sessions() as session:
        job = session.get(Job, poisoned)
        assert job is not None and job.step == "store"
    assert not [key for key in container.blobs.list("objects/") if poisoned in key]
    assert count_rows(container, "instances") == 3


def test_several_jobs_blob_writes_are_in_flight_together(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A journalled file system commits concurrent flushes together: each job of a batch must
    # not wait for the previous job's writes to end before its own start.
    from irmsia.pipeline.ingest import WRITING_JOBS

    assert WRITING_JOBS >= 3
    recorder = _Recorder(container, monkeypatch)
    blocker = recorder.blocked_by(threads, container, to_bytes(make_ct(seed=1)))
    tickets = [_ticket(container, blob) for blob in _slices(3)]
    all_writing = threading.Barrier(3, timeout=10)
    met: list[bool] = []
    original_put_stream = container.blobs.put_stream

    def put_stream(key, parts):  # type: ignore[no-untyped-def]
        if any(ticket[0] in key for ticket in tickets):
            try:  # every job of the batch is writing before any write ends
                all_writing.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)
        return original_put_stream(key, parts)

    monkeypatch.setattr(container.blobs, "put_stream", put_stream)
    queued = [threads.submit(*ticket) for ticket in tickets]
    recorder.hold.set()
    outcomes = [future.result(30) for future in queued]
    blocker.result(30)
    assert recorder.sizes == [1, 3]
    assert met == [True, True, True]
    assert [outcome.result["status"] for outcome in outcomes] == ["stored"] * 3
    assert count_rows(container, "stored_objects") == 4 * 3  # DICOM, PNG, thumbnail each
    assert len(list(container.blobs.list("objects/"))) == 4  # in one blob per instance


def test_the_same_instance_twice_in_one_batch_is_stored_once(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(container, monkeypatch)
    blob = to_bytes(make_ct(seed=7))
    blocker = recorder.blocked_by(threads, container, to_bytes(make_ct(seed=1)))
    twice = [threads.submit(*_ticket(container, blob)) for _ in range(2)]
    recorder.hold.set()
    first, second = (future.result(30) for future in twice)
    blocker.result(30)
    assert recorder.sizes == [1, 2]
    assert first.result["status"] == "stored" and second.result["status"] == "duplicate"
    assert second.result["image_id"] == first.result["image_id"]
    assert count_rows(container, "instances") == 2
    # The copy's blobs are gone: only the stored objects' blobs remain.
    with container.sessions() as session:
        indexed = set(session.scalars(select(StoredObject.storage_key)))
    assert set(container.blobs.list("objects/")) == indexed


def test_a_retryable_failure_of_an_in_memory_job_is_retried_with_its_input(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = container.pipeline.store

    def flaky(state) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageError("storage briefly unavailable")
        original(state)

    monkeypatch.setattr(container.pipeline, "store", flaky)
    monkeypatch.setattr(executors, "BACKOFF_SECONDS", (0.0,))
    batch = container.ingest.submit(CLI_CTX, _files(_slices(1)))
    assert batch.counts["stored"] == 1 and calls["n"] == 2
    assert list(container.blobs.list("spool/")) == []  # it never needed a spool


def test_an_in_memory_job_that_fails_keeps_its_input_encrypted_for_a_retry(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = container.pipeline.render

    def broken(state) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("renderer bug")

    monkeypatch.setattr(container.pipeline, "render", broken)
    blob = to_bytes(make_ct())
    batch = container.ingest.submit(CLI_CTX, _files([blob]))
    (item,) = batch.files
    assert item.error == "internal_error" and item.job_id
    (spooled,) = container.blobs.list("spool/")
    assert blob[132:] not in container.blobs.get(spooled)  # kept encrypted, never in clear
    monkeypatch.setattr(container.pipeline, "render", original)
    assert container.runner.requeue(item.job_id)
    assert threads.submit(item.job_id).result(30).state is JobState.SUCCEEDED
    assert count_rows(container, "instances") == 1
    assert list(container.blobs.list("spool/")) == []


def test_closing_the_executor_finishes_what_is_queued(
    container: Container, threads: executors.ThreadExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(container, monkeypatch)
    recorder.hold.clear()
    futures = [threads.submit(*_ticket(container, blob)) for blob in _slices(3)]
    assert recorder.holding.wait(10)
    threading.Timer(0.2, recorder.hold.set).start()
    threads.close()
    assert all(future.done() and future.result().state is JobState.SUCCEEDED for future in futures)
    with pytest.raises(RuntimeError, match="closed"):
        threads.submit(*_ticket(container, to_bytes(make_ct(seed=9)))).result(5)


def test_worker_processes_run_batches_from_memory_and_from_the_spool(tmp_path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from irmsia.bootstrap import build_container
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "procs", db_url, INGEST_EXECUTOR="process", INGEST_WORKERS="2")
    built = build_container(settings)
    try:
        assert isinstance(built.executor, executors.ProcessExecutor)
        built.executor.wait_ready()
        waited = built.ingest.submit(CLI_CTX, _files(_slices(6)))  # in memory, through the pipe
        assert waited.counts["stored"] == 6
        queued = built.ingest.submit(CLI_CTX, _files(_slices(2)), wait=False)  # spooled
        outcomes = [built.executor.submit(item.job_id or "").result(60) for item in queued.files]
        # Already run by the first submission (wait=False also queues them): a finished job is
        # left alone and its outcome returned.
        assert {outcome.state for outcome in outcomes} == {JobState.SUCCEEDED}
        assert count_rows(built, "instances") == 8
        assert list(built.blobs.list("spool/")) == []
    finally:
        built.close()


def test_worker_processes_survive_a_terminal_interrupt(tmp_path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    # Ctrl-C in a terminal sends SIGINT to the whole process group, workers included: they
    # ignore it (the server stops the pool itself), so the pool is not broken by it.
    import multiprocessing
    import os
    import signal

    from irmsia.bootstrap import build_container
    from tests.conftest import make_settings

    before = {child.pid for child in multiprocessing.active_children()}
    settings = make_settings(tmp_path / "sig", db_url, INGEST_EXECUTOR="process", INGEST_WORKERS="2")
    built = build_container(settings)
    try:
        built.executor.wait_ready()
        workers = [child for child in multiprocessing.active_children() if child.pid not in before]
        assert len(workers) == 2
        for worker in workers:
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(worker.is_alive() for worker in workers)
        assert built.ingest.submit(CLI_CTX, _files(_slices(3))).counts["stored"] == 3
    finally:
        built.close()
