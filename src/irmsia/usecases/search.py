"""Browse the image index: patients, studies, series, instances. Every read is audited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from irmsia.db import index
from irmsia.db.aistatus import STATUSES
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Series, Study
from irmsia.db.index import InstanceFilter, PatientRow, SeriesFilter, SeriesRow, StudyFilter
from irmsia.errors import InvalidRequest, NotFound
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    offset: int
    limit: int


@dataclass
class Search:
    sessions: sessionmaker[Session]
    audit: AuditLog

    def patients(
        self, ctx: RequestContext, *, pseudonym: str | None = None, offset: int = 0, limit: int = 50
    ) -> Page[PatientRow]:
        authorize(ctx.principal, Permission.READ_IMAGES)
        with transaction(self.sessions) as session:
            rows, total = index.find_patients(session, pseudonym=pseudonym, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "patient.list", resource_type="patient", detail={"returned": len(rows)}
            )
        return Page(rows, total, offset, limit)

    def studies(
        self, ctx: RequestContext, flt: StudyFilter, *, offset: int = 0, limit: int = 50
    ) -> Page[Study]:
        """Studies matching ``flt``, newest first unless ``flt.sort`` says otherwise.

        Filtering or sorting on the AI summary (``ai_status``, ``min_risk``, ``sort="risk"``;
        see ``irmsia.db.aistatus``) also needs ``ai:read``. Raises ``InvalidRequest`` for an
        unknown status or order, or a risk outside 0..100.
        """
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        _check_ai_filter(flt)
        if flt.ai_status or flt.min_risk is not None or flt.sort == "risk":
            authorize(principal, Permission.READ_RESULTS)
        flt = replace(flt, include_quarantined=principal.can(Permission.QUARANTINE))
        with transaction(self.sessions) as session:
            rows, total = index.find_studies(session, flt, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "study.list", resource_type="study", detail={"returned": len(rows)}
            )
        return Page(rows, total, offset, limit)

    def study(self, ctx: RequestContext, study_id: str) -> Study:
        """A study with its series and instances (quarantined instances for admins only)."""
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        with transaction(self.sessions) as session:
            study = index.study_with_series(session, study_id)
            if study is None:
                raise NotFound("no such study")
            if not principal.can(Permission.QUARANTINE):
                for series in study.series:
                    series.instances = [i for i in series.instances if i.status == "stored"]
                    session.expunge(series)
                if not any(series.instances for series in study.series):
                    raise NotFound("no such study")
            self.audit.record(session, ctx, "study.read", resource_type="study", resource_id=study.id)
            return study

    def series_list(
        self, ctx: RequestContext, flt: SeriesFilter, *, offset: int = 0, limit: int = 50
    ) -> Page[SeriesRow]:
        """Series matching ``flt`` with their image counts (quarantined images for admins only)."""
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        flt = replace(flt, include_quarantined=principal.can(Permission.QUARANTINE))
        with transaction(self.sessions) as session:
            rows, total = index.find_series(session, flt, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "series.list", resource_type="series", detail={"returned": len(rows)}
            )
        return Page(rows, total, offset, limit)

    def instances(
        self, ctx: RequestContext, flt: InstanceFilter, *, offset: int = 0, limit: int = 50
    ) -> Page[Instance]:
        """Instances matching ``flt``, in series and instance order (quarantined ones for admins only)."""
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        flt = replace(flt, include_quarantined=principal.can(Permission.QUARANTINE))
        with transaction(self.sessions) as session:
            rows, total = index.find_instances(session, flt, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "image.list", resource_type="image", detail={"returned": len(rows)}
            )
        return Page(rows, total, offset, limit)

    def series(self, ctx: RequestContext, series_id: str) -> tuple[Series, list[Instance]]:
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        with transaction(self.sessions) as session:
            series = index.series_instances(session, series_id, include_quarantined=True)
            if series is None:
                raise NotFound("no such series")
            instances = [
                i for i in series.instances if i.status == "stored" or principal.can(Permission.QUARANTINE)
            ]
            instances.sort(key=lambda i: (i.instance_number is None, i.instance_number or 0, i.created_at))
            self.audit.record(session, ctx, "series.read", resource_type="series", resource_id=series.id)
            return series, instances


SORTS = ("newest", "oldest", "risk")


def _check_ai_filter(flt: StudyFilter) -> None:
    if flt.ai_status is not None and flt.ai_status not in STATUSES:
        raise InvalidRequest(f"AI status must be one of {', '.join(STATUSES)}")
    if flt.min_risk is not None and not 0 <= flt.min_risk <= 100:
        raise InvalidRequest("the minimum risk must be between 0 and 100")
    if flt.sort not in SORTS:
        raise InvalidRequest(f"sort must be one of {', '.join(SORTS)}")
