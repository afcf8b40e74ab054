"""The audit log (admins and auditors)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.audit import AuditEventPublic, AuditPagePublic
from irmsia.bootstrap import Container
from irmsia.db.auditlog import AuditFilter
from irmsia.errors import InvalidRequest
from irmsia.usecases.context import RequestContext

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


@router.get("", response_model=AuditPagePublic, summary="Search the audit log, newest first")
def search_audit(
    actor_id: str | None = Query(None, max_length=128),
    username: str | None = Query(None, max_length=128, description="the actor's username"),
    patient: str | None = Query(
        None,
        max_length=64,
        description="a patient pseudonym: its studies, series, images, reports, AI results",
    ),
    action: str | None = Query(None, max_length=64),
    resource_type: str | None = Query(None, max_length=32),
    resource_id: str | None = Query(None, max_length=128),
    outcome: str | None = Query(None, pattern="^(success|failure|denied)$"),
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> AuditPagePublic:
    for value in (since, until):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest("since/until need a timezone, e.g. 2026-01-31T00:00:00Z")
    flt = AuditFilter(
        actor_id,
        action,
        resource_type,
        resource_id,
        outcome,
        since,
        until,
        username=username,
        patient=patient,
    )
    page = container.audit.search(ctx, flt, offset=offset, limit=limit)
    return AuditPagePublic(
        items=[AuditEventPublic(**event.as_dict()) for event in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )
