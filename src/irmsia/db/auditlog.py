"""Queries on the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from irmsia.db.models import AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    """What to look for; every field given must match (``since`` inclusive, ``until`` not).

    ``username`` and ``patient`` (a pseudonym) are resolved by ``AuditLog.search`` into
    conditions on the actor id and on the resources; ``find`` ignores them.
    """

    actor_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    username: str | None = None
    patient: str | None = None


def _apply(query: Select[Any], flt: AuditFilter) -> Select[Any]:
    if flt.actor_id:
        query = query.where(AuditEvent.actor_id == flt.actor_id)
    if flt.action:
        query = query.where(AuditEvent.action == flt.action)
    if flt.resource_type:
        query = query.where(AuditEvent.resource_type == flt.resource_type)
    if flt.resource_id:
        query = query.where(AuditEvent.resource_id == flt.resource_id)
    if flt.outcome:
        query = query.where(AuditEvent.outcome == flt.outcome)
    if flt.since:
        query = query.where(AuditEvent.time >= flt.since)
    if flt.until:
        query = query.where(AuditEvent.time < flt.until)
    return query


def find(
    session: Session,
    flt: AuditFilter,
    *,
    offset: int,
    limit: int,
    where: Sequence[ColumnElement[bool]] = (),
) -> tuple[Sequence[AuditEvent], int]:
    """Events matching ``flt`` and every condition in ``where``, newest first, and the total count."""
    base = _apply(select(AuditEvent), flt)
    for condition in where:
        base = base.where(condition)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(AuditEvent.seq.desc()).offset(offset).limit(limit)).all()
    return rows, int(total)
