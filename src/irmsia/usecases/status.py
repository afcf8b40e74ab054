"""System status for dashboards: what the blob store holds according to the index, and keys.

Nothing here is audited: it returns counts, byte totals and key ids only (no patient data),
and a dashboard that refreshes must not grow the audit log and the ledger with every view.
``storage`` needs ``Permission.READ_SYSTEM``; ``keys`` needs ``Permission.MANAGE_KEYS``, as
``Keys.status`` does (which the REST API serves, audited). Nothing reads the blob store
itself; readiness (can it be written?) is ``Container.check_ready``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.crypto.keys import KeyProvider
from irmsia.db.imaging import Instance, StoredObject, VaultEntry
from irmsia.db.jobs import Job
from irmsia.pipeline.job import JobState
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.context import RequestContext
from irmsia.usecases.keys import KeyStatus


@dataclass(frozen=True)
class KindTotal:
    """Stored objects of one kind (``dicom``, ``png``, ``png16``, ``thumbnail``)."""

    count: int
    bytes: int  # encrypted, as stored


@dataclass(frozen=True)
class StorageStatus:
    """The blob store's contents as indexed, the spool and the quarantine.

    ``spool_pending`` counts encrypted uploads waiting for or in a pipeline run;
    ``spool_kept`` those of failed jobs kept for a retry; ``spool_bytes`` is both together
    (plaintext sizes as received).
    """

    backend: str
    by_kind: Mapping[str, KindTotal]
    spool_pending: int
    spool_kept: int
    spool_bytes: int
    quarantined: int

    @property
    def objects(self) -> int:
        return sum(item.count for item in self.by_kind.values())

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.by_kind.values())


@dataclass
class SystemStatus:
    sessions: sessionmaker[Session]
    provider: KeyProvider
    backend: str  # the configured blob store's name: filesystem, s3, memory, …

    def keys(self, ctx: RequestContext) -> KeyStatus:
        """The key-encryption keys and how many data keys each wraps. Not audited."""
        authorize(ctx.principal, Permission.MANAGE_KEYS)
        counts: dict[str, int] = {}
        with self.sessions() as session:
            for model in (StoredObject, VaultEntry):
                for key_id, count in session.execute(
                    select(model.key_id, func.count()).group_by(model.key_id)
                ):
                    counts[key_id] = counts.get(key_id, 0) + int(count)
        return KeyStatus(self.provider.current_key_id(), self.provider.key_ids(), counts)

    def storage(self, ctx: RequestContext) -> StorageStatus:
        """Stored objects and bytes by kind, spooled inputs and quarantined images. Not audited."""
        authorize(ctx.principal, Permission.READ_SYSTEM)
        waiting = (JobState.PENDING.value, JobState.RUNNING.value)
        with self.sessions() as session:
            by_kind = {
                str(kind): KindTotal(int(count), int(total or 0))
                for kind, count, total in session.execute(
                    select(StoredObject.kind, func.count(), func.sum(StoredObject.size))
                    .group_by(StoredObject.kind)
                    .order_by(StoredObject.kind)
                )
            }
            spool: dict[str, int] = {}
            spool_bytes = 0
            for state, count, total in session.execute(
                select(Job.state, func.count(), func.sum(Job.input_size))
                .where(Job.spool_key.is_not(None))
                .group_by(Job.state)
            ):
                spool[str(state)] = int(count)
                spool_bytes += int(total or 0)
            quarantined = session.scalar(
                select(func.count()).select_from(Instance).where(Instance.status == "quarantined")
            )
        return StorageStatus(
            backend=self.backend,
            by_kind=by_kind,
            spool_pending=sum(spool.get(state, 0) for state in waiting),
            spool_kept=spool.get(JobState.FAILED.value, 0),
            spool_bytes=spool_bytes,
            quarantined=int(quarantined or 0),
        )
