"""The job runner: claims durable job records, runs their pipeline's steps, records the outcomes.

Steps keep no process-local state: everything a step needs arrives in the pipeline's
state object, built from the job record and its input, so any worker process (local or on
a Ray cluster) can run any job. The input is either the job's encrypted spool in the blob
store or, for a synchronous in-process submission, the bytes handed over with the ticket
(``Ticket.payload``): the submitter still holds the request, so a crash loses nothing the
client was told was accepted.

Jobs run in batches (group commit): each job's steps run on their own, then every job of
the batch that got through them is committed in **one** transaction — the pipeline's
``commit`` (the index, its log entries and audit records) and the jobs' success records
together. A batch is whatever was queued while the workers were busy, so an idle system
commits each job at once and a loaded one amortises the transaction over many. If the
batch's transaction fails, each job is committed alone, so a failure is charged to its own
job only.

The last step may leave I/O running (ingest's blob writes wait mostly for the disk's flush):
the runner goes on with the next job's steps and ``settle``-s every job before the commit, so
one worker's CPU work overlaps its own writes; a job whose background work failed fails like
a failed step.

A failed step triggers the pipeline's ``abort`` (delete what the job wrote) before the
failure is recorded, so no half-indexed object and no orphan blob is left; ``recover``
does the same at start-up for jobs a crash interrupted. A job that failed for a reason
other than its input keeps its encrypted input, so that an admin can ``requeue`` it (or
``discard`` the input).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.crypto.keys import WrappedKey
from irmsia.db.engine import engine_of, transaction
from irmsia.db.jobs import Job
from irmsia.errors import IrmsiaError, NotFound, StorageError
from irmsia.pipeline.job import Failure, JobState, after_crash, after_failure, classify, spool_key
from irmsia.storage.base import BlobStore

log = logging.getLogger(__name__)

Step = Callable[[Any], None]
COMMIT_ATTEMPTS = 3  # a batch transaction refused by a constraint a concurrent writer hit first
COMMIT_STEP = "index"  # the timing (and failed step) name of the batch commit
INPUT_LOST = Failure(
    "interrupted",
    "the job was interrupted and its input, held by the request that sent it, is gone",
    retryable=False,
)

_JOBS: Table = Job.__table__  # type: ignore[assignment]
_DONE = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job"))
    .values(
        state=JobState.SUCCEEDED.value,
        step=None,
        finished_at=bindparam("finished"),
        result=bindparam("result_json"),
        timings=bindparam("timings_json"),
        error_code=None,
        error_detail=None,
        spool_key=None,
        spool_key_id=None,
        spool_wrapped_key=None,
    )
)


_CLAIM = (  # pending jobs among the ids become running, one more attempt, returning what runs them
    update(_JOBS)
    .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)), _JOBS.c.state == JobState.PENDING.value)
    .values(state=JobState.RUNNING.value, attempt=_JOBS.c.attempt + 1, started_at=bindparam("now"))
    .returning(
        _JOBS.c.id,
        _JOBS.c.kind,
        _JOBS.c.options,
        _JOBS.c.spool_key,
        _JOBS.c.spool_key_id,
        _JOBS.c.spool_wrapped_key,
    )
)


class Pipeline(Protocol):
    """One kind of job: its state, its steps, the batch commit, its result and its undo."""

    kind: str

    def steps(self) -> Sequence[tuple[str, Step]]:
        """The per-job steps, run before the commit; each reads and extends the state."""
        ...

    def start(self, job_id: str, options: Mapping[str, Any], payload: bytes) -> Any: ...

    def settle(self, state: Any) -> None:
        """Wait for work a step left running in the background (the blob writes of the last
        step), so that the next job's steps overlap it; raise what that work raised. The
        runner calls it for every job of a batch before the batch commit."""
        ...

    def commit(self, session: Session, states: Sequence[Any]) -> None:
        """Record the work of every state in ``session`` (the caller commits, once).

        May be called again with the same states after a rollback: it must start afresh.
        """
        ...

    def after_commit(self, state: Any) -> bool:
        """Work that needs the committed records (and must never fail the job): True if the
        result changed."""
        ...

    def result(self, state: Any) -> dict[str, Any]: ...

    def abort(self, state: Any) -> None: ...

    def cleanup_job(self, job_id: str) -> int:
        """Delete anything a crashed run of ``job_id`` left behind; return how many items."""
        ...


@dataclass(frozen=True)
class Ticket:
    """A job to run: its id and, for a synchronous in-process submission, its input bytes."""

    job_id: str
    payload: bytes | None = None
    size: int = 0  # the input's size in bytes, for sizing batches (0: unknown)


@dataclass(frozen=True)
class Outcome:
    job_id: str
    state: JobState
    result: dict[str, Any]
    failure: Failure | None = None


@dataclass(frozen=True)
class _Claim:
    kind: str
    options: dict[str, Any]
    spool: tuple[str, str, bytes] | None


@dataclass
class _Ran:
    """A job whose steps all succeeded, waiting for the batch commit."""

    ticket: Ticket
    claim: _Claim
    state: Any
    timings: dict[str, float] = field(default_factory=dict)


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
        self._engine = engine_of(sessions)
        self._blobs = blobs
        self._cipher = cipher
        self._clock = clock
        self._pipelines = {pipeline.kind: pipeline for pipeline in pipelines}

    def run(self, job_id: str, payload: bytes | None = None) -> Outcome:
        """Run one pending job to a new state. A job not pending is left alone.

        Raises ``NotFound`` for an unknown job.
        """
        (outcome,) = self.run_batch([Ticket(job_id, payload)])
        if isinstance(outcome, IrmsiaError):
            raise outcome
        return outcome

    def run_batch(self, tickets: Sequence[Ticket]) -> list[Outcome | IrmsiaError]:
        """Run pending jobs together: their steps one by one, then one commit for all.

        Returns, per ticket in order, the job's new outcome (a job that was not pending is
        left alone and its current outcome returned) or the error that stopped it from
        being looked at (``NotFound`` for an unknown id).
        """
        answers: dict[str, Outcome | IrmsiaError] = {}
        claims = self._claim(tickets)
        ran: dict[str, list[_Ran]] = {}
        for ticket in tickets:
            claim = claims.get(ticket.job_id)
            if claim is None:
                try:
                    answers[ticket.job_id] = self.outcome(ticket.job_id)
                except IrmsiaError as exc:
                    answers[ticket.job_id] = exc
                continue
            done = self._steps(ticket, claim)
            if isinstance(done, Outcome):
                answers[ticket.job_id] = done
            else:
                ran.setdefault(claim.kind, []).append(done)
        for kind, group in ran.items():
            group = self._settle(self._pipelines[kind], group, answers)
            if not group:
                continue
            for outcome in self._commit(self._pipelines[kind], group):
                answers[outcome.job_id] = outcome
        return [answers[ticket.job_id] for ticket in tickets]

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
        """Start-up: requeue or fail jobs a crash interrupted and delete their partial output.

        A job whose input was only in memory (a synchronous submission whose client never
        got its answer) cannot run again and fails as ``interrupted``.
        """
        with transaction(self._sessions) as session:
            stuck = session.scalars(
                select(Job).where(
                    (Job.state == JobState.RUNNING.value)
                    | ((Job.state == JobState.PENDING.value) & Job.spool_key.is_(None))
                )
            ).all()
            for job in stuck:
                job.state = (
                    after_crash(job.attempt, job.max_attempts).value
                    if job.spool_key
                    else JobState.FAILED.value
                )
                job.step = None
                if job.state == JobState.FAILED.value:
                    job.finished_at = self._clock()
                    if job.spool_key:
                        job.error_code, job.error_detail = "interrupted", "interrupted too many times"
                    else:
                        job.error_code, job.error_detail = INPUT_LOST.code, INPUT_LOST.detail
            ids = [(job.id, job.kind) for job in stuck]
        for job_id, kind in ids:
            # A job interrupted too often keeps its encrypted input: an admin may retry it.
            pipeline = self._pipelines.get(kind)
            if pipeline is not None:
                pipeline.cleanup_job(job_id)
        return len(ids)

    def pending(self) -> list[str]:
        """Pending jobs that can run from their spool, oldest first."""
        with self._sessions() as session:
            query = (
                select(Job.id)
                .where(Job.state == JobState.PENDING.value, Job.spool_key.is_not(None))
                .order_by(Job.created_at)
            )
            return list(session.scalars(query).all())

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

    # --- internals ---------------------------------------------------------------------
    def _claim(self, tickets: Sequence[Ticket]) -> dict[str, _Claim]:
        """Claim every pending job of ``tickets`` in one conditional UPDATE … RETURNING."""
        if not tickets:
            return {}
        in_memory = {ticket.job_id for ticket in tickets if ticket.payload is not None}
        claimed: dict[str, _Claim] = {}
        ids = [ticket.job_id for ticket in tickets]
        with self._engine.begin() as connection:  # Core: every batch pays for this statement
            for job_id, kind, options, spool_key, key_id, wrapped in connection.execute(
                _CLAIM, {"ids": ids, "now": self._clock()}
            ):
                spool = (spool_key, key_id, wrapped) if spool_key and key_id and wrapped else None
                claimed[job_id] = _Claim(kind, json.loads(options or "{}"), spool)
        lost = [job_id for job_id, c in claimed.items() if c.spool is None and job_id not in in_memory]
        for job_id in lost:  # its input was in the memory of a process that is gone
            self._finish_failed(job_id, INPUT_LOST, {}, "spool", claimed.pop(job_id).spool)
        return claimed

    def _steps(self, ticket: Ticket, claim: _Claim) -> _Ran | Outcome:
        """Run one claimed job's steps; a failure is recorded at once (it needs no commit)."""
        pipeline = self._pipelines[claim.kind]
        timings: dict[str, float] = {}
        state: Any = None
        current = "spool"
        try:
            started = time.perf_counter()
            payload = ticket.payload
            if payload is None:
                assert claim.spool is not None  # _claim failed the others
                payload = self._read_spool(ticket.job_id, claim.spool)
                timings["spool"] = round((time.perf_counter() - started) * 1000, 3)
            state = pipeline.start(ticket.job_id, claim.options, payload)
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
            return self._finish_failed(ticket.job_id, failure, timings, current, claim.spool, ticket.payload)
        return _Ran(ticket, claim, state, timings)

    def _settle(
        self, pipeline: Pipeline, group: list[_Ran], answers: dict[str, Outcome | IrmsiaError]
    ) -> list[_Ran]:
        """Wait for each job's background work; a failed job is recorded and left out."""
        steps = pipeline.steps()
        last = steps[-1][0] if steps else "settle"  # the step that started the work
        settled = []
        for ran in group:
            started = time.perf_counter()
            try:
                pipeline.settle(ran.state)
            except Exception as exc:  # noqa: BLE001  (the worker's edge: every failure is recorded)
                pipeline.abort(ran.state)
                answers[ran.ticket.job_id] = self._finish_failed(
                    ran.ticket.job_id, classify(exc), ran.timings, last, ran.claim.spool, ran.ticket.payload
                )
                continue
            waited = (time.perf_counter() - started) * 1000
            ran.timings[last] = round(ran.timings.get(last, 0.0) + waited, 3)
            settled.append(ran)
        return settled

    def _commit(self, pipeline: Pipeline, group: list[_Ran]) -> list[Outcome]:
        """Commit the group in one transaction; if that fails, each job alone."""
        error: BaseException | None = None
        for _attempt in range(COMMIT_ATTEMPTS):
            try:
                self._commit_once(pipeline, group)
                error = None
                break
            except DbIntegrityError as exc:
                # A concurrent writer inserted a row this batch also inserts (the same patient,
                # study, series or instance): commit again, which now finds it.
                error = exc
            except Exception as exc:  # noqa: BLE001  (the worker's edge: every failure is recorded)
                error = exc
                break
        if error is not None:
            if len(group) > 1:
                return [outcome for ran in group for outcome in self._commit(pipeline, [ran])]
            ran = group[0]
            pipeline.abort(ran.state)
            failure = classify(error)
            return [
                self._finish_failed(
                    ran.ticket.job_id, failure, ran.timings, COMMIT_STEP, ran.claim.spool, ran.ticket.payload
                )
            ]
        outcomes = []
        for ran in group:
            if ran.claim.spool is not None:
                self._blobs.delete(ran.claim.spool[0])
            outcomes.append(Outcome(ran.ticket.job_id, JobState.SUCCEEDED, pipeline.result(ran.state)))
        return self._after_commit(pipeline, group, outcomes)

    def _commit_once(self, pipeline: Pipeline, group: list[_Ran]) -> None:
        """The pipeline's commit and every job's success record, in one transaction."""
        started = time.perf_counter()
        with transaction(self._sessions) as session:
            pipeline.commit(session, [ran.state for ran in group])
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            finished = self._clock()
            rows = []
            for ran in group:
                ran.timings[COMMIT_STEP] = elapsed
                rows.append(
                    {
                        "job": ran.ticket.job_id,
                        "finished": finished,
                        "result_json": json.dumps(pipeline.result(ran.state), sort_keys=True),
                        "timings_json": json.dumps(ran.timings),
                    }
                )
            session.connection().execute(_DONE, rows)

    def _after_commit(self, pipeline: Pipeline, group: list[_Ran], outcomes: list[Outcome]) -> list[Outcome]:
        changed = [ran for ran in group if pipeline.after_commit(ran.state)]
        if not changed:
            return outcomes
        with transaction(self._sessions) as session:
            for ran in changed:
                session.execute(
                    update(Job)
                    .where(Job.id == ran.ticket.job_id)
                    .values(result=json.dumps(pipeline.result(ran.state), sort_keys=True))
                    .execution_options(synchronize_session=False)
                )
        return [
            Outcome(o.job_id, o.state, pipeline.result(ran.state)) if ran in changed else o
            for ran, o in zip(group, outcomes, strict=True)
        ]

    def _read_spool(self, job_id: str, spool: tuple[str, str, bytes]) -> bytes:
        key, key_id, wrapped = spool
        return self._cipher.decrypt(f"spool:{job_id}", self._blobs.get(key), WrappedKey(key_id, wrapped))

    def _finish_failed(
        self,
        job_id: str,
        failure: Failure,
        timings: dict[str, float],
        step: str,
        spool: tuple[str, str, bytes] | None,
        payload: bytes | None = None,
    ) -> Outcome:
        """Record the failure and the step it happened in; drop the input only if it was at fault.

        A retryable failure of a job whose input is in memory stays pending only because its
        submitter will run it again with that input; ``pending`` never lists it. When such a
        job fails for good for a reason other than its input, the input is spooled now
        (encrypted), so that an admin can retry it like any other.
        """
        kept = None
        with transaction(self._sessions) as session:
            job = session.get(Job, job_id)
            assert job is not None
            state = after_failure(failure, job.attempt, job.max_attempts)
            job.state, job.step = state.value, step
            job.error_code, job.error_detail, job.timings = failure.code, failure.detail, json.dumps(timings)
            spool_key_to_delete = None
            if state is JobState.FAILED:
                job.finished_at = self._clock()
                if failure.input_fault:
                    spool_key_to_delete = job.spool_key
                    job.spool_key = job.spool_key_id = job.spool_wrapped_key = None
                elif spool is None and payload is not None:
                    kept = self._keep_input(job_id, payload)
                    if kept is not None:
                        job.spool_key, job.spool_key_id, job.spool_wrapped_key = kept
        if spool_key_to_delete:
            self._blobs.delete(spool_key_to_delete)
        log.info("job %s %s at %s: %s", job_id, state.value, step, failure.code)
        return Outcome(job_id, state, {}, failure)

    def _keep_input(self, job_id: str, payload: bytes) -> tuple[str, str, bytes] | None:
        """Spool an in-memory input (encrypted); None when the blob store refuses it too."""
        key = spool_key(job_id)
        sealed = self._cipher.encrypt_stream(f"spool:{job_id}", [payload])
        try:
            self._blobs.put_stream(key, sealed.chunks)
        except StorageError:
            log.warning("job %s: its input could not be kept for a retry", job_id)
            return None
        return key, sealed.wrapped_key.key_id, sealed.wrapped_key.ciphertext
