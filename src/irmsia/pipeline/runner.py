"""The job runner: claims a durable job record, runs its pipeline's steps, records the outcome.

Steps keep no process-local state: everything a step needs arrives in the pipeline's
state object, built from the job record and its encrypted spooled input, so any worker
process (local or on a Ray cluster) can run any job. A failed step triggers the
pipeline's ``abort`` (delete what the job wrote) before the failure is recorded, so no
half-indexed object and no orphan blob is left; ``recover`` does the same at start-up for
jobs a crash interrupted. A job that failed for a reason other than its input keeps its
encrypted input, so that an admin can ``requeue`` it (or ``discard`` the input).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.crypto.keys import WrappedKey
from irmsia.db.engine import transaction
from irmsia.db.jobs import Job
from irmsia.errors import NotFound
from irmsia.pipeline.job import Failure, JobState, after_crash, after_failure, classify
from irmsia.storage.base import BlobStore

log = logging.getLogger(__name__)

Step = Callable[[Any], None]


class Pipeline(Protocol):
    """One kind of job: how to build its state, its ordered steps, its result and its undo."""

    kind: str

    def steps(self) -> Sequence[tuple[str, Step]]: ...

    def start(self, job_id: str, options: Mapping[str, Any], payload: bytes) -> Any: ...

    def result(self, state: Any) -> dict[str, Any]: ...

    def abort(self, state: Any) -> None: ...

    def cleanup_job(self, job_id: str) -> int:
        """Delete anything a crashed run of ``job_id`` left behind; return how many items."""
        ...


@dataclass(frozen=True)
class Outcome:
    job_id: str
    state: JobState
    result: dict[str, Any]
    failure: Failure | None = None


class JobRunner:
    """Runs jobs by id. Thread-safe: each call uses its own database sessions."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        cipher: EnvelopeCipher,
        clock: Clock,
        pipelines: Sequence[Pipeline],
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._cipher = cipher
        self._clock = clock
        self._pipelines = {pipeline.kind: pipeline for pipeline in pipelines}

    def run(self, job_id: str) -> Outcome:
        """Run one pending job to a new state. A job not pending is left alone."""
        claimed = self._claim(job_id)
        if claimed is None:
            return self.outcome(job_id)
        kind, options, spool = claimed
        pipeline = self._pipelines[kind]
        timings: dict[str, float] = {}
        state: Any = None
        current = "spool"
        try:
            started = time.perf_counter()
            payload = self._read_spool(job_id, spool)
            timings["spool"] = round((time.perf_counter() - started) * 1000, 3)
            state = pipeline.start(job_id, options, payload)
            del payload
            for current, step in pipeline.steps():
                started = time.perf_counter()
                step(state)
                timings[current] = round((time.perf_counter() - started) * 1000, 3)
        except Exception as exc:  # noqa: BLE001  (the worker's edge: every failure is recorded)
            # Unknown errors keep their type only: their message may quote the data.
            failure = classify(exc)
            if state is not None:
                pipeline.abort(state)
            return self._finish_failed(job_id, failure, timings, current)
        return self._finish_ok(job_id, pipeline.result(state), timings, spool[0])

    def requeue(self, job_id: str) -> bool:
        """Make a failed job that kept its input pending again, with fresh attempts.

        Returns False when the job is not failed or its input is gone (a job rejected for
        its input deletes it at once; see ``Failure.input_fault``). The caller submits the
        job to an executor afterwards.
        """
        again = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.FAILED.value, Job.spool_key.is_not(None))
            .values(
                state=JobState.PENDING.value,
                attempt=0,
                step=None,
                error_code=None,
                error_detail=None,
                started_at=None,
                finished_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        with transaction(self._sessions) as session:
            if session.get(Job, job_id) is None:
                raise NotFound("no such job")
            return bool(session.execute(again).rowcount)  # type: ignore[attr-defined]

    def discard(self, job_id: str) -> bool:
        """Delete the kept input of a failed job; it can no longer be retried."""
        with transaction(self._sessions) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound("no such job")
            if job.state != JobState.FAILED.value or not job.spool_key:
                return False
            spool_key = job.spool_key
            job.spool_key = job.spool_key_id = job.spool_wrapped_key = None
        self._blobs.delete(spool_key)
        return True

    def outcome(self, job_id: str) -> Outcome:
        with self._sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound("no such job")
            failure = (
                Failure(job.error_code or "", job.error_detail or "", retryable=False)
                if job.error_code
                else None
            )
            return Outcome(job.id, JobState(job.state), json.loads(job.result or "{}"), failure)

    def recover(self) -> int:
        """Start-up: requeue or fail jobs left RUNNING by a crash and delete their partial output."""
        with transaction(self._sessions) as session:
            stuck = session.scalars(select(Job).where(Job.state == JobState.RUNNING.value)).all()
            for job in stuck:
                job.state = after_crash(job.attempt, job.max_attempts).value
                job.step = None
                if job.state == JobState.FAILED.value:
                    job.error_code, job.error_detail = "interrupted", "interrupted too many times"
                    job.finished_at = self._clock()
            ids = [(job.id, job.kind, job.state, job.spool_key) for job in stuck]
        for job_id, kind, _state, _spool_key in ids:
            # A job interrupted too often keeps its encrypted input: an admin may retry it.
            pipeline = self._pipelines.get(kind)
            if pipeline is not None:
                pipeline.cleanup_job(job_id)
        return len(ids)

    def pending(self) -> list[str]:
        with self._sessions() as session:
            query = select(Job.id).where(Job.state == JobState.PENDING.value).order_by(Job.created_at)
            return list(session.scalars(query).all())

    # --- internals ---------------------------------------------------------------------
    def _claim(self, job_id: str) -> tuple[str, dict[str, Any], tuple[str, str, bytes]] | None:
        # One conditional UPDATE … RETURNING: atomic on every backend, one round trip.
        claim = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.state == JobState.PENDING.value,
                # NULL compares as unknown, so these also refuse missing values.
                Job.spool_key != "",
                Job.spool_key_id != "",
                Job.spool_wrapped_key != b"",
            )
            .values(state=JobState.RUNNING.value, attempt=Job.attempt + 1, started_at=self._clock())
            .returning(Job.kind, Job.options, Job.spool_key, Job.spool_key_id, Job.spool_wrapped_key)
            .execution_options(synchronize_session=False)
        )
        with transaction(self._sessions) as session:
            row = session.execute(claim).first()
            if row is None:
                # Not claimed: say why (rare, so the extra query costs nothing in the common case).
                job = session.get(Job, job_id)
                if job is None:
                    raise NotFound("no such job")
                if job.state != JobState.PENDING.value:
                    return None
                raise NotFound("job has no input")
        kind, options, spool_key, spool_key_id, spool_wrapped_key = row
        assert spool_key and spool_key_id and spool_wrapped_key  # the WHERE clause saw to it
        return kind, json.loads(options or "{}"), (spool_key, spool_key_id, spool_wrapped_key)

    def _read_spool(self, job_id: str, spool: tuple[str, str, bytes]) -> bytes:
        key, key_id, wrapped = spool
        return self._cipher.decrypt(f"spool:{job_id}", self._blobs.get(key), WrappedKey(key_id, wrapped))

    def _finish_ok(
        self, job_id: str, result: dict[str, Any], timings: dict[str, float], spool_key: str
    ) -> Outcome:
        """Record success in one UPDATE (the claim read the spool key), then delete the spool."""
        done = (
            update(Job)
            .where(Job.id == job_id)
            .values(
                state=JobState.SUCCEEDED.value,
                step=None,
                finished_at=self._clock(),
                result=json.dumps(result, sort_keys=True),
                timings=json.dumps(timings),
                error_code=None,
                error_detail=None,
                spool_key=None,
                spool_key_id=None,
                spool_wrapped_key=None,
            )
            .execution_options(synchronize_session=False)
        )
        with transaction(self._sessions) as session:
            session.execute(done)
        self._blobs.delete(spool_key)
        return Outcome(job_id, JobState.SUCCEEDED, result)

    def _finish_failed(self, job_id: str, failure: Failure, timings: dict[str, float], step: str) -> Outcome:
        """Record the failure and the step it happened in; drop the input only if it was at fault."""
        with transaction(self._sessions) as session:
            job = session.get(Job, job_id)
            assert job is not None
            state = after_failure(failure, job.attempt, job.max_attempts)
            job.state, job.step = state.value, step
            job.error_code, job.error_detail, job.timings = failure.code, failure.detail, json.dumps(timings)
            spool_key = None
            if state is JobState.FAILED:
                job.finished_at = self._clock()
                if failure.input_fault:
                    spool_key = job.spool_key
                    job.spool_key = job.spool_key_id = job.spool_wrapped_key = None
        if spool_key:
            self._blobs.delete(spool_key)
        log.info("job %s %s: %s", job_id, state.value, failure.code)
        return Outcome(job_id, state, {}, failure)
