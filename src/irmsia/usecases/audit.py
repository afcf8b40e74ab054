"""Audit: record who did what to which resource, and let admins and auditors read it.

Records carry opaque ids only. ``AuditLog.record`` writes into the caller's session, so an
audited change and its record commit together; each record's log entry is appended in the
same transaction (``AuditLog`` cannot be built without the log).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Table, func, insert, or_, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db import accounts, auditlog
from irmsia.db.analysis import Analysis
from irmsia.db.auditlog import AuditFilter
from irmsia.db.base import new_id
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Patient, Series, Study
from irmsia.db.models import AuditEvent, audit_canonical_bytes
from irmsia.ledger.entries import EntryLog
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.context import RequestContext

_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_NEW_EVENT = insert(_EVENTS)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True)
class AuditPage:
    items: Sequence[AuditEvent]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class AuditRecord:
    """What one audit record says, before it is written (see ``AuditLog.record``)."""

    ctx: RequestContext
    action: str
    outcome: Outcome = Outcome.SUCCESS
    resource_type: str | None = None
    resource_id: str | None = None
    detail: Mapping[str, Any] | None = None
    actor_name: str | None = None


@dataclass
class AuditLog:
    sessions: sessionmaker[Session]
    clock: Clock
    log: EntryLog  # every record is appended to the transparency log in its own transaction

    def record(
        self,
        session: Session,
        ctx: RequestContext,
        action: str,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        resource_type: str | None = None,
        resource_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        actor_name: str | None = None,
    ) -> AuditEvent:
        """Add an audit record to ``session`` (committed with the caller's transaction)."""
        record = AuditRecord(ctx, action, outcome, resource_type, resource_id, detail, actor_name)
        (row,) = self._write(session, [record], after=())
        return AuditEvent(**row)

    def record_many(
        self, session: Session, records: Sequence[AuditRecord], *, after: Sequence[bytes] = ()
    ) -> None:
        """Add several audit records with one flush and one log append (bulk ingest).

        ``after``: log entries of the records these audit records are about (stored objects,
        AI results), appended in the same append just before the audit entries, so that a
        change and its audit record cost the transaction one append.
        """
        self._write(session, records, after=after)

    def _write(
        self, session: Session, records: Sequence[AuditRecord], *, after: Sequence[bytes]
    ) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        for record in records:
            principal = record.ctx.principal
            rows.append(
                {
                    "id": new_id(),
                    "time": now,
                    "actor_id": principal.id if principal else None,
                    "actor_name": principal.username if principal else record.actor_name,
                    "actor_role": principal.primary_role if principal else None,
                    "action": record.action,
                    "resource_type": record.resource_type,
                    "resource_id": record.resource_id,
                    "outcome": record.outcome.value,
                    "client_ip": record.ctx.client_ip,
                    "request_id": record.ctx.request_id,
                    "detail": json.dumps(dict(record.detail or {}), sort_keys=True),
                }
            )
        session.flush()  # what the caller added goes first, as the log entries in ``after`` do
        # One Core INSERT for every record (an ORM unit of work costs several times more, and
        # every audited request pays it); the events returned are not attached to the session.
        session.connection().execute(_NEW_EVENT, rows)
        # The entries from the rows: an ORM object per record would cost more than its entry.
        self.log.append_many(session, [*after, *(audit_canonical_bytes(row) for row in rows)])
        return rows

    def record_now(self, ctx: RequestContext, action: str, **kwargs: Any) -> None:
        """Record in a transaction of its own (for refusals, where the caller's is rolled back)."""
        with transaction(self.sessions) as session:
            self.record(session, ctx, action, **kwargs)

    def search(self, ctx: RequestContext, flt: AuditFilter, *, offset: int = 0, limit: int = 50) -> AuditPage:
        """Audit records matching ``flt``, newest first. Reading the log is itself audited.

        ``flt.username`` matches the records of that account by its id (records keep the
        actor's id, not a name that could be reused); a name without a local account (an
        OIDC identity) matches the name recorded with each event. ``flt.patient`` (a
        pseudonym) matches records about the patient, the accession pseudonyms of its
        studies, and its studies (and their reports), series, images and AI results as the
        index holds them now: records about images deleted since are found by their own id
        only.
        """
        authorize(ctx.principal, Permission.READ_AUDIT)
        with transaction(self.sessions) as session:
            where: list[ColumnElement[bool]] = []
            detail: dict[str, Any] = {}
            if flt.username:
                name = flt.username.strip().lower()
                user = accounts.user_by_name(session, name)
                where.append(
                    AuditEvent.actor_id == user.id if user else func.lower(AuditEvent.actor_name) == name
                )
                detail["username"] = name
            if flt.patient:
                where.append(patient_resources(flt.patient))
                detail["patient"] = flt.patient
            rows, total = auditlog.find(session, flt, offset=offset, limit=limit, where=where)
            self.record(session, ctx, "audit.search", detail={"returned": len(rows), **detail})
        return AuditPage(items=rows, total=total, offset=offset, limit=limit)


def patient_resources(pseudonym: str) -> ColumnElement[bool]:
    """Records whose resource belongs to the patient with this pseudonym (subqueries, not id
    lists: a patient can have many thousands of images)."""
    studies = (
        select(Study.id).join(Patient, Study.patient_id == Patient.id).where(Patient.pseudonym == pseudonym)
    )
    accessions = (
        select(Study.accession_pseudonym)
        .join(Patient, Study.patient_id == Patient.id)
        .where(Patient.pseudonym == pseudonym, Study.accession_pseudonym.is_not(None))
    )
    series = select(Series.id).where(Series.study_id.in_(studies))
    images = select(Instance.id).where(Instance.series_id.in_(series))
    analyses = select(Analysis.id).where(Analysis.patient_pseudonym == pseudonym)
    kind, key = AuditEvent.resource_type, AuditEvent.resource_id
    return or_(
        (kind == "patient") & (key == pseudonym),
        (kind == "accession") & key.in_(accessions),
        kind.in_(("study", "report")) & key.in_(studies),
        (kind == "series") & key.in_(series),
        (kind == "image") & key.in_(images),
        (kind == "analysis") & key.in_(analyses),
    )
