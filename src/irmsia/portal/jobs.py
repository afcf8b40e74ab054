"""Job listing and cheap pipeline metrics for the admin dashboard.

A use case like those in ``irmsia.usecases`` (it authorises and audits itself); it lives
here until ``usecases/jobs.py`` exists, so the portal does not have to query the database.
``mean_timings`` and ``JobMetrics`` are pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db.engine import transaction
from irmsia.db.jobs import Job
from irmsia.errors import InvalidRequest
from irmsia.pipeline.job import JobState
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

RATE_WINDOW = timedelta(hours=1)
ERROR_WINDOW = timedelta(hours=24)
TIMING_SAMPLE = 500  # finished jobs whose step timings are averaged


@dataclass(frozen=True)
class JobPage:
    items: Sequence[Job]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class JobMetrics:
    """Counts by state, throughput and mean step durations (milliseconds)."""

    by_state: Mapping[str, int]
    succeeded_last_hour: int
    failed_last_day: int
    mean_step_ms: Mapping[str, float]
    timing_sample: int

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


def _parse_timings(text: str | None) -> dict[str, float]:
    try:
        parsed = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): float(v) for k, v in parsed.items() if isinstance(v, int | float)}


@dataclass
class JobBoard:
    sessions: sessionmaker[Session]
    audit: AuditLog
    clock: Clock

    def list(
        self, ctx: RequestContext, *, state: str | None = None, offset: int = 0, limit: int = 50
    ) -> JobPage:
        """Every pipeline job, newest first, optionally in one state (admins). Audited."""
        authorize(ctx.principal, Permission.MANAGE_JOBS)
        if state is not None and state not in {s.value for s in JobState}:
            raise InvalidRequest(f"state must be one of {', '.join(s.value for s in JobState)}")
        query = select(Job)
        if state is not None:
            query = query.where(Job.state == state)
        with transaction(self.sessions) as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(Job.created_at.desc()).offset(offset).limit(limit)).all()
            self.audit.record(session, ctx, "job.list", resource_type="job", detail={"returned": len(rows)})
        return JobPage(rows, int(total), offset, limit)

    def metrics(self, ctx: RequestContext) -> JobMetrics:
        """Counts by state, jobs that succeeded in the last hour, failures in the last day, mean step times."""
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
        timings = [_parse_timings(text) for text in recent]
        return JobMetrics(
            by_state=by_state,
            succeeded_last_hour=int(succeeded or 0),
            failed_last_day=int(failed or 0),
            mean_step_ms=mean_timings(timings),
            timing_sample=len(timings),
        )
