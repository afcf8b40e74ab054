"""Pipeline jobs for admins: list them, read cheap metrics, retry or discard failed jobs.

A failed job may keep its encrypted input (the runner decides; never when the input itself
was at fault, see ``irmsia.pipeline.job.Failure``), so an admin can retry it once the cause
is fixed, or discard the kept input. Listing, retrying and discarding need ``Permission.MANAGE_JOBS`` and
are audited (``job.list``, ``job.retry``, ``job.discard``; a refused retry or discard is
audited as a failure). ``metrics`` needs ``Permission.READ_SYSTEM`` and is not audited: it
holds counts, durations and PHI-free failure codes, and a dashboard that refreshes must
not grow the audit log and the ledger with every view. ``mean_timings`` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NoReturn

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db.engine import transaction
from irmsia.db.jobs import Job
from irmsia.errors import Conflict, InvalidRequest, NotFound
from irmsia.pipeline.executors import Executor
from irmsia.pipeline.job import JobState
from irmsia.pipeline.runner import JobRunner
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog, Outcome
from irmsia.usecases.context import RequestContext

RATE_WINDOW = timedelta(hours=1)
ERROR_WINDOW = timedelta(hours=24)
TIMING_SAMPLE = 500  # finished jobs whose step timings are averaged
RECENT_FAILURES = 5
MAX_PAGE = 500
STATES = tuple(state.value for state in JobState)


@dataclass(frozen=True)
class JobPage:
    items: Sequence[Job]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class JobMetrics:
    """Counts by state, throughput, mean step durations (milliseconds), the latest failures."""

    by_state: Mapping[str, int]
    succeeded_last_hour: int
    failed_last_day: int
    mean_step_ms: Mapping[str, float]
    timing_sample: int
    recent_failures: Sequence[Job] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def mean_timings(timings: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each step's duration over the jobs that ran it, in first-seen step order."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for item in timings:
        for step, value in item.items():
            sums[step] = sums.get(step, 0.0) + float(value)
            counts[step] = counts.get(step, 0) + 1
    return {step: round(sums[step] / counts[step], 1) for step in sums}


def parse_timings(text: str | None) -> dict[str, float]:
    """A job's stored per-step timings; anything unreadable counts as none."""
    try:
        parsed = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): float(v) for k, v in parsed.items() if isinstance(v, int | float)}


def retryable(job: Job) -> bool:
    """A failed job whose encrypted input was kept: ``Jobs.retry`` and ``Jobs.discard`` accept it."""
    return job.state == JobState.FAILED.value and bool(job.spool_key)


@dataclass
class Jobs:
    sessions: sessionmaker[Session]
    audit: AuditLog
    clock: Clock
    runner: JobRunner
    executor: Executor

    def list(
        self, ctx: RequestContext, *, state: str | None = None, offset: int = 0, limit: int = 50
    ) -> JobPage:
        """Every pipeline job, newest first, optionally in one state (admins). Audited.

        Raises ``InvalidRequest`` for an unknown state or a bad page.
        """
        authorize(ctx.principal, Permission.MANAGE_JOBS)
        if state is not None and state not in STATES:
            raise InvalidRequest(f"state must be one of {', '.join(STATES)}")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"offset must be 0 or more and limit between 1 and {MAX_PAGE}")
        query = select(Job)
        if state is not None:
            query = query.where(Job.state == state)
        with transaction(self.sessions) as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)
            ).all()
            detail: dict[str, object] = {"returned": len(rows)}
            if state is not None:
                detail["state"] = state
            self.audit.record(session, ctx, "job.list", resource_type="job", detail=detail)
        return JobPage(rows, int(total), offset, limit)

    def retry(self, ctx: RequestContext, job_id: str) -> Job:
        """Queue a failed job that kept its input again, with fresh attempts, and submit it.

        Returns the job as it is after submission (pending or running with a background
        executor, finished with the inline one). Raises ``NotFound`` for an unknown job and
        ``Conflict`` when the job has not failed or its input is gone (the file must then be
        uploaded again).
        """
        authorize(ctx.principal, Permission.MANAGE_JOBS)
        before = self._job(job_id)
        if not self.runner.requeue(job_id):
            self._refused(ctx, "job.retry", before)
        self.audit.record_now(
            ctx,
            "job.retry",
            resource_type="job",
            resource_id=job_id,
            detail={"step": before.step, "error_code": before.error_code},
        )
        self.executor.submit(job_id)
        return self._job(job_id)

    def discard(self, ctx: RequestContext, job_id: str) -> Job:
        """Delete the kept encrypted input of a failed job; it can no longer be retried.

        Raises ``NotFound`` for an unknown job and ``Conflict`` when the job has not failed or
        has no input left.
        """
        authorize(ctx.principal, Permission.MANAGE_JOBS)
        before = self._job(job_id)
        if not self.runner.discard(job_id):
            self._refused(ctx, "job.discard", before)
        self.audit.record_now(
            ctx,
            "job.discard",
            resource_type="job",
            resource_id=job_id,
            detail={"step": before.step, "error_code": before.error_code},
        )
        return self._job(job_id)

    def metrics(self, ctx: RequestContext) -> JobMetrics:
        """Counts by state, successes in the last hour, failures in the last day, mean step
        times over the latest successful jobs, and the latest failures. Not audited."""
        authorize(ctx.principal, Permission.READ_SYSTEM)
        now = self.clock()
        with self.sessions() as session:
            by_state = {
                str(state): int(count)
                for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state))
            }
            succeeded = session.scalar(
                select(func.count()).where(
                    Job.state == JobState.SUCCEEDED.value, Job.finished_at >= now - RATE_WINDOW
                )
            )
            failed = session.scalar(
                select(func.count()).where(
                    Job.state == JobState.FAILED.value, Job.finished_at >= now - ERROR_WINDOW
                )
            )
            recent = session.scalars(
                select(Job.timings)
                .where(Job.state == JobState.SUCCEEDED.value)
                .order_by(Job.finished_at.desc())
                .limit(TIMING_SAMPLE)
            ).all()
            failures = session.scalars(
                select(Job)
                .where(Job.state == JobState.FAILED.value)
                .order_by(Job.finished_at.desc(), Job.id)
                .limit(RECENT_FAILURES)
            ).all()
        timings = [parse_timings(text) for text in recent]
        return JobMetrics(
            by_state=by_state,
            succeeded_last_hour=int(succeeded or 0),
            failed_last_day=int(failed or 0),
            mean_step_ms=mean_timings(timings),
            timing_sample=len(timings),
            recent_failures=tuple(failures),
        )

    # --- internals ---------------------------------------------------------------------
    def _job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound("no such job")
            return job

    def _refused(self, ctx: RequestContext, action: str, job: Job) -> NoReturn:
        """Audit a refused retry or discard and raise the ``Conflict`` that says why."""
        current = self._job(job.id)
        if current.state != JobState.FAILED.value:
            reason, detail = "not_failed", f"the job is {current.state}, not failed"
        elif action == "job.discard":
            reason, detail = "input_gone", "the job has no kept input to discard"
        else:
            reason = "input_gone"
            detail = (
                "the job's input is no longer kept (input at fault is deleted at once, or it was "
                "discarded); upload the file again"
            )
        self.audit.record_now(
            ctx,
            action,
            outcome=Outcome.FAILURE,
            resource_type="job",
            resource_id=job.id,
            detail={"reason": reason},
        )
        raise Conflict(detail)
