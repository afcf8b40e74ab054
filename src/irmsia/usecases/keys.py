"""Key management: rotate the key-encryption key and re-wrap every data key (blobs untouched)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.crypto.keys import KeyProvider, WrappedKey
from irmsia.db.engine import transaction
from irmsia.db.imaging import StoredObject, VaultEntry
from irmsia.db.jobs import Job
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

BATCH = 500


@dataclass(frozen=True)
class KeyStatus:
    current_key_id: str
    key_ids: tuple[str, ...]
    wrapped_by_key: dict[str, int]


@dataclass(frozen=True)
class Rotation:
    new_key_id: str
    rewrapped: int


@dataclass
class Keys:
    sessions: sessionmaker[Session]
    provider: KeyProvider
    cipher: EnvelopeCipher
    audit: AuditLog

    def status(self, ctx: RequestContext) -> KeyStatus:
        """The KEKs and how many data keys each wraps (admins only; audited as ``keys.status``)."""
        authorize(ctx.principal, Permission.MANAGE_KEYS)
        counts: dict[str, int] = {}
        current = self.provider.current_key_id()
        with transaction(self.sessions) as session:
            for model in (StoredObject, VaultEntry):
                for key_id, count in session.execute(
                    select(model.key_id, func.count()).group_by(model.key_id)
                ):
                    counts[key_id] = counts.get(key_id, 0) + int(count)
            self.audit.record(session, ctx, "keys.status", resource_type="key", resource_id=current)
        return KeyStatus(current, self.provider.key_ids(), counts)

    def rotate(self, ctx: RequestContext) -> Rotation:
        """Add a new KEK and re-wrap every data key under it; no blob is read or rewritten."""
        authorize(ctx.principal, Permission.MANAGE_KEYS)
        new_key = self.provider.rotate()
        total = self.rewrap_all()
        with transaction(self.sessions) as session:
            self.audit.record(
                session,
                ctx,
                "keys.rotate",
                resource_type="key",
                resource_id=new_key,
                detail={"rewrapped": total},
            )
        return Rotation(new_key, total)

    def rewrap_all(self) -> int:
        """Re-wrap data keys not yet under the current KEK, in batches (resumable)."""
        current = self.provider.current_key_id()
        total = 0
        models: tuple[type[StoredObject] | type[VaultEntry], ...] = (StoredObject, VaultEntry)
        for model in models:
            while True:
                with transaction(self.sessions) as session:
                    rows = cast(
                        Sequence[StoredObject | VaultEntry],
                        session.scalars(select(model).where(model.key_id != current).limit(BATCH)).all(),
                    )
                    for row in rows:
                        wrapped = self.cipher.rewrap(WrappedKey(row.key_id, row.wrapped_key))
                        row.key_id, row.wrapped_key = wrapped.key_id, wrapped.ciphertext
                    total += len(rows)
                if len(rows) < BATCH:
                    break
        with transaction(self.sessions) as session:
            jobs = session.scalars(
                select(Job).where(Job.spool_key_id.is_not(None), Job.spool_key_id != current)
            ).all()
            for job in jobs:
                assert job.spool_key_id is not None and job.spool_wrapped_key is not None
                wrapped = self.cipher.rewrap(WrappedKey(job.spool_key_id, job.spool_wrapped_key))
                job.spool_key_id, job.spool_wrapped_key = wrapped.key_id, wrapped.ciphertext
            total += len(jobs)
        return total
