"""Durable jobs: crashes are recovered at start-up, failures leave no orphan, retries back off."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, func, select

from irmsia.bootstrap import Container
from irmsia.db.engine import engine_of, transaction
from irmsia.db.jobs import Job
from irmsia.db.models import AuditEvent
from irmsia.errors import StorageError
from irmsia.pipeline import executors
from irmsia.pipeline.job import JobState
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import count_rows
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX


def _queue(container: Container, blob: bytes) -> str:
    batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[blob], label="1")], wait=False)
    job_id = batch.files[0].job_id
    assert job_id is not None
    return job_id


class _Paused:
    """An executor that accepts jobs but runs none (a server that died before running them)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, bytes | None]] = []

    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0):  # type: ignore[no-untyped-def]
        from concurrent.futures import Future

        self.submitted.append((job_id, payload))
        return Future()

    def close(self) -> None:
        pass


def test_crash_mid_job_is_cleaned_up_and_resumed_at_start_up(container: Container) -> None:
    container.ingest.executor = _Paused()
    job_id = _queue(container, to_bytes(make_ct()))
    # Simulate a worker that died after writing a blob but before indexing it.
    with transaction(container.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.state, job.attempt, job.step = JobState.RUNNING.value, 1, "store"
    orphan = f"objects/{job_id[:2]}/{job_id}.bin"
    container.blobs.put(orphan, b"partial")
    # Leftovers in the layouts of earlier versions (a blob per object, in the shared
    # directories or in a directory per job) go too.
    per_object = f"objects/{job_id[:2]}/{job_id}-leftover.bin"
    container.blobs.put(per_object, b"partial")
    legacy = f"objects/{job_id[:2]}/{job_id}/leftover.bin"
    container.blobs.put(legacy, b"partial")
    # Another job's blob in the same shared directory stays.
    neighbour = f"objects/{job_id[:2]}/{job_id[:2]}{'f' * 30}-kept.bin"
    container.blobs.put(neighbour, b"another job")

    resumed = container.resume_jobs()
    assert resumed == 1
    outcome = container.runner.outcome(job_id)
    for _ in range(100):
        if outcome.state is JobState.SUCCEEDED:
            break
        import time

        time.sleep(0.05)
        outcome = container.runner.outcome(job_id)
    assert outcome.state is JobState.SUCCEEDED
    assert not container.blobs.exists(per_object)
    assert not container.blobs.exists(legacy)
    assert container.blobs.get(neighbour) == b"another job"
    stored = [key for key in container.blobs.list("objects/") if key != neighbour]
    assert stored == [orphan]  # written again by the resumed job, in full
    assert container.blobs.size(orphan) > len(b"partial")
    assert count_rows(container, "instances") == 1
    assert not any(key.startswith("spool/") for key in container.blobs.list(""))


def test_a_synchronous_submission_passes_its_input_in_memory_and_spools_nothing(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = _Paused()
    container.ingest.executor = paused
    import threading

    # wait=True blocks on the job's future; run the submission in a thread and look meanwhile.
    worker = threading.Thread(
        target=container.ingest.submit,
        args=(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")]),
        daemon=True,
    )
    worker.start()
    for _ in range(200):
        if paused.submitted:
            break
        import time

        time.sleep(0.01)
    ((job_id, payload),) = paused.submitted
    assert payload is not None and payload.startswith(b"\x00" * 128)  # the object itself, in memory
    assert list(container.blobs.list("spool/")) == []  # nothing written, not even encrypted
    with container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.spool_key is None and job.state == JobState.PENDING.value
    # The process dies here: at start-up the job cannot run (its input was in memory) and fails.
    assert container.runner.pending() == []
    assert container.runner.recover() == 1
    outcome = container.runner.outcome(job_id)
    assert outcome.state is JobState.FAILED and outcome.failure is not None
    assert outcome.failure.code == "interrupted"


def test_objects_over_the_in_memory_limit_are_spooled_even_when_waiting(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    from irmsia.usecases import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "IN_MEMORY_MAX", 1024)
    paused = _Paused()
    container.ingest.executor = paused
    import threading

    threading.Thread(
        target=container.ingest.submit,
        args=(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")]),
        daemon=True,
    ).start()
    for _ in range(200):
        if paused.submitted:
            break
        import time

        time.sleep(0.01)
    ((job_id, payload),) = paused.submitted
    assert payload is None
    assert [key.split("/")[0] for key in container.blobs.list("spool/")] == ["spool"]
    assert container.runner.pending() == [job_id]


def test_failed_step_leaves_no_orphan_blob_and_no_half_index(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_commit(session, states) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("boom with Canaryname in the message")

    monkeypatch.setattr(container.pipeline, "commit", broken_commit)
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, to_bytes(make_ct()))
    outcome = container.runner.outcome(job_id)
    assert outcome.state is JobState.FAILED
    assert outcome.failure is not None
    assert outcome.failure.code == "internal_error"
    assert "Canaryname" not in outcome.failure.detail  # unknown errors keep their type only
    # No stored object remains; only the encrypted original, kept so that an admin can retry.
    assert [key.split("/")[0] for key in container.blobs.list("")] == ["spool"]
    assert count_rows(container, "instances") == 0
    with container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.step == "index"  # the step that failed is recorded


def test_a_failed_job_can_be_requeued_and_then_succeeds(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = container.pipeline.commit

    def broken_commit(session, states) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("boom")

    monkeypatch.setattr(container.pipeline, "commit", broken_commit)
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, to_bytes(make_ct()))
    assert container.runner.outcome(job_id).state is JobState.FAILED

    monkeypatch.setattr(container.pipeline, "commit", original)
    assert container.runner.requeue(job_id) is True
    assert container.runner.requeue(job_id) is False  # pending now, not failed
    outcome = container.runner.run(job_id)
    assert outcome.state is JobState.SUCCEEDED
    assert count_rows(container, "instances") == 1
    assert not any(key.startswith("spool/") for key in container.blobs.list(""))
    with container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempt == 1 and job.error_code is None and job.step is None


def test_a_failed_jobs_input_can_be_discarded(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_store(state) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("boom")

    monkeypatch.setattr(container.pipeline, "store", broken_store)
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, to_bytes(make_ct()))
    assert container.runner.discard(job_id) is True
    assert list(container.blobs.list("")) == []
    assert container.runner.requeue(job_id) is False  # nothing left to run
    assert container.runner.discard(job_id) is False


def test_storage_failure_is_retried_then_succeeds(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = container.pipeline.store

    def flaky_store(state) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageError("storage briefly unavailable")
        original(state)

    monkeypatch.setattr(container.pipeline, "store", flaky_store)
    monkeypatch.setattr(executors, "BACKOFF_SECONDS", (0.0,))
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, to_bytes(make_ct()))
    with container.sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        assert job.state == JobState.SUCCEEDED.value and job.attempt == 2
    assert calls["n"] == 2


def test_invalid_input_is_not_retried(container: Container) -> None:
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, b"\x00" * 400)
    with container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.state == JobState.FAILED.value and job.attempt == 1
        assert job.error_code == "not_dicom" and job.step == "validate"
        assert job.spool_key is None  # bad input is not kept: retrying cannot help
    assert list(container.blobs.list("")) == []
    assert container.runner.requeue(job_id) is False


def test_concurrent_insert_of_the_same_patient_is_retried(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError as DbIntegrityError

    from irmsia.pipeline.ingest import IngestPipeline

    original = IngestPipeline._index
    calls = {"n": 0}

    def racing_index(self, session, todo, now):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:  # as if another worker had inserted this patient first
            raise DbIntegrityError("INSERT", {}, Exception("unique constraint"))
        return original(self, session, todo, now)

    monkeypatch.setattr(IngestPipeline, "_index", racing_index)
    container.ingest.executor = executors.InlineExecutor(container.runner)
    job_id = _queue(container, to_bytes(make_ct()))
    assert container.runner.outcome(job_id).state is JobState.SUCCEEDED
    assert calls["n"] == 2
    assert count_rows(container, "instances") == 1


def _transactions(container: Container) -> tuple[list[list[str]], Callable[[], None]]:
    """The INSERT/UPDATE statements of each committed transaction, as they happen."""
    engine = engine_of(container.sessions)
    done: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def executed(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            current.setdefault(id(conn), []).append(" ".join(statement.split()[:3]).upper())

    def committed(conn: Any) -> None:
        if statements := current.pop(id(conn), None):
            done.append(statements)

    event.listen(engine, "after_cursor_execute", executed)
    event.listen(engine, "commit", committed)

    def stop() -> None:
        event.remove(engine, "after_cursor_execute", executed)
        event.remove(engine, "commit", committed)

    return done, stop


def test_a_one_file_submission_records_its_job_with_its_audit_record_in_one_transaction(
    container: Container,
) -> None:
    done, stop = _transactions(container)
    try:
        batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct(seed=3))], label="1")])
    finally:
        stop()
    assert batch.counts["stored"] == 1
    # The first write: the job's row, the submission's audit record and its log entry; then
    # the job's claim and its commit.
    first = done[0]
    assert "INSERT INTO JOBS" in first and "INSERT INTO AUDIT_EVENTS" in first
    assert not any("INSERT INTO JOBS" in statements for statements in done[1:])
    assert not any("INSERT INTO AUDIT_EVENTS" in s and "UPDATE JOBS" not in s for s in done[1:-1])


def test_jobs_of_a_large_submission_are_recorded_a_group_at_a_time(container: Container) -> None:
    from irmsia.usecases.ingest import GROUP_FILES

    files = [
        IncomingFile(data=[to_bytes(make_ct(seed=40 + n))], label=str(n)) for n in range(GROUP_FILES + 3)
    ]
    done, stop = _transactions(container)
    try:
        batch = container.ingest.submit(CLI_CTX, files)
    finally:
        stop()
    assert batch.counts["stored"] == GROUP_FILES + 3
    job_writes = [
        statements.count("INSERT INTO JOBS") for statements in done if "INSERT INTO JOBS" in statements
    ]
    # One INSERT statement per group (many rows each): GROUP_FILES jobs, then the last three
    # with the audit record.
    assert len(job_writes) == 2
    with container.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == GROUP_FILES + 3


def test_when_the_last_group_cannot_be_recorded_its_objects_are_rejected_and_the_audit_says_so(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = container.ingest.audit
    real = audit.record
    calls = []

    def record(session: Any, ctx: Any, action: str, **kwargs: Any) -> Any:
        calls.append(action)
        if len(calls) == 1:  # the transaction with the last group's job records fails
            raise StorageError("database is not reachable")
        return real(session, ctx, action, **kwargs)

    monkeypatch.setattr(audit, "record", record)
    batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct(seed=9))], label="1")])
    (item,) = batch.files
    assert item.error == "storage_error" and item.job_id is None
    assert count_rows(container, "jobs") == 0 and count_rows(container, "instances") == 0
    with container.sessions() as session:
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "ingest.submit")).all()
    assert event.outcome == "failure"
    assert json.loads(event.detail) == {"objects": 1, "queued": 0}
