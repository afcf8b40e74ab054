"""SQLAlchemy tables of IRMSIA.

Identifiers are opaque random hex strings; no table stores patient data in clear (the
re-identification vault stores ciphertext only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from irmsia.db.base import Base, new_id


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="local")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]

    refresh_tokens: Mapped[list[RefreshToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class RefreshToken(Base):
    """A refresh token, stored as its SHA-256. Each use rotates it within its family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="refresh_tokens")


class LoginThrottle(Base):
    """Failed-login counter per account or client address (keys are hashed)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class AuditEvent(Base):
    """One audited action. Carries opaque ids only, never patient data."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time", "time"),
        Index("ix_audit_events_resource", "resource_type", "resource_id"),
        Index("ix_audit_events_actor", "actor_id"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    time: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(128))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    actor_role: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")

    def as_dict(self) -> dict[str, Any]:
        return audit_fields({name: getattr(self, name) for name in AUDIT_COLUMNS})

    def canonical_bytes(self) -> bytes:
        """Canonical serialisation for the ledger: sorted-key, compact, UTF-8 JSON."""
        return canonical_json({"type": "audit", **self.as_dict()})


# The columns an audit record shows (all but the insertion sequence number).
AUDIT_COLUMNS = (
    "id",
    "time",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "client_ip",
    "request_id",
    "detail",
)


def audit_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """An audit record's columns as shown and logged: the time in ISO 8601 UTC, the detail parsed."""
    shown = {name: row[name] for name in AUDIT_COLUMNS}
    shown["time"] = row["time"].isoformat().replace("+00:00", "Z")
    shown["detail"] = json.loads(row["detail"] or "{}")
    return shown


def audit_canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The log entry of an audit record from its columns (``AuditEvent.canonical_bytes`` of a
    row not loaded as an ORM object: bulk writers skip building one per record)."""
    return canonical_json({"type": "audit", **audit_fields(row)})


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the same bytes for the same content."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


# Register the other tables on the same metadata (Alembic and tests see every table).
from irmsia.db import analysis, imaging, jobs, ledger  # noqa: E402, F401
