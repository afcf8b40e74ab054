"""Schemas of the audit-log endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventPublic(BaseModel):
    id: str
    time: datetime
    actor_id: str | None
    actor_name: str | None
    actor_role: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    client_ip: str | None
    request_id: str | None
    detail: dict[str, Any]


class AuditPagePublic(BaseModel):
    items: list[AuditEventPublic]
    total: int
    offset: int
    limit: int
