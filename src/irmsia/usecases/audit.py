"""Audit: record who did what to which resource, and let admins and auditors read it.

Records carry opaque ids only. ``AuditLog.record`` writes into the caller's session, so an
audited change and its record commit together; hooks (the ledger) see each record before
the commit, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db import auditlog
from irmsia.db.auditlog import AuditFilter
from irmsia.db.engine import transaction
from irmsia.db.models import AuditEvent
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.context import RequestContext

AuditHook = Callable[[Session, AuditEvent], None]


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


@dataclass
class AuditLog:
    sessions: sessionmaker[Session]
    clock: Clock
    hooks: list[AuditHook] = field(default_factory=list)

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
        principal = ctx.principal
        event = AuditEvent(
            time=self.clock(),
            actor_id=principal.id if principal else None,
            actor_name=principal.username if principal else actor_name,
            actor_role=principal.primary_role if principal else None,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=outcome.value,
            client_ip=ctx.client_ip,
            request_id=ctx.request_id,
            detail=json.dumps(dict(detail or {}), sort_keys=True),
        )
        session.add(event)
        session.flush()
        for hook in self.hooks:
            hook(session, event)
        return event

    def record_now(self, ctx: RequestContext, action: str, **kwargs: Any) -> None:
        """Record in a transaction of its own (for refusals, where the caller's is rolled back)."""
        with transaction(self.sessions) as session:
            self.record(session, ctx, action, **kwargs)

    def search(self, ctx: RequestContext, flt: AuditFilter, *, offset: int = 0, limit: int = 50) -> AuditPage:
        """Audit records matching ``flt``, newest first. Reading the log is itself audited."""
        authorize(ctx.principal, Permission.READ_AUDIT)
        with transaction(self.sessions) as session:
            rows, total = auditlog.find(session, flt, offset=offset, limit=limit)
            self.record(session, ctx, "audit.search", detail={"returned": len(rows)})
        return AuditPage(items=rows, total=total, offset=offset, limit=limit)
