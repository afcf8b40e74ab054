"""Who looked at a study: audit events on the study, its series and its images.

A use case like those in ``irmsia.usecases`` (it authorises and audits itself); it lives
here until it moves next to ``AuditLog.search``. Auditors may not read images, so this use
case finds the study's series and image ids itself instead of asking ``Search``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Series
from irmsia.db.models import AuditEvent
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog, AuditPage
from irmsia.usecases.context import RequestContext


@dataclass
class StudyAccessLog:
    sessions: sessionmaker[Session]
    audit: AuditLog

    def events(self, ctx: RequestContext, study_id: str, *, offset: int = 0, limit: int = 50) -> AuditPage:
        """Audit events whose resource is the study or one of its series or images, newest first.

        Images deleted since are no longer linked to the study; events naming the study
        itself are always found. Reading is audited as ``audit.search``.
        """
        authorize(ctx.principal, Permission.READ_AUDIT)
        with transaction(self.sessions) as session:
            # Subqueries, not id lists: a study can have many thousands of images.
            series_ids = select(Series.id).where(Series.study_id == study_id)
            image_ids = select(Instance.id).join(Series).where(Series.study_id == study_id)
            conditions = or_(
                (AuditEvent.resource_type == "study") & (AuditEvent.resource_id == study_id),
                (AuditEvent.resource_type == "series") & AuditEvent.resource_id.in_(series_ids),
                (AuditEvent.resource_type == "image") & AuditEvent.resource_id.in_(image_ids),
            )
            query = select(AuditEvent).where(conditions)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(AuditEvent.seq.desc()).offset(offset).limit(limit)).all()
            self.audit.record(
                session,
                ctx,
                "audit.search",
                # The study goes in the detail, not the resource: reading the access log is
                # not looking at the study, and must not show up as such.
                detail={"view": "study_access", "study_id": study_id, "returned": len(rows)},
            )
        return AuditPage(items=rows, total=int(total), offset=offset, limit=limit)
