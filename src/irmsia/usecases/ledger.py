"""Ledger use cases: read checkpoints, proofs, receipts and anchors; publish anchors.

Reads need ``Permission.READ_LEDGER`` (admins, auditors) and are audited as ``ledger.read``
with the view in ``detail``; reading the log thus adds to it, which is intended. The one
exception is ``LedgerReads.status``, the dashboard's summary (sizes, hashes, times and
statuses, no entry): it is a plain read that neither audits nor signs, so refreshing a
dashboard never grows the log. Publishing
anchors on demand is for admins (``Permission.ANCHOR_LEDGER``: it speaks for the log's key to
the outside world) and is audited as ``ledger.anchor``. The verifier key is public.

``build_ledger_services`` wires everything once (bootstrap calls it) and registers the audit
hook; ``make_scheduler`` builds the background jobs the app's lifespan starts and stops.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance
from irmsia.db.ledger import LedgerAnchor
from irmsia.errors import Conflict, ExternalServiceError, InvalidRequest, NotFound
from irmsia.ledger import entries
from irmsia.ledger.anchors.base import Anchor, AnchorReceipt
from irmsia.ledger.checkpoint import open_checkpoint
from irmsia.ledger.merkle import leaf_hash
from irmsia.ledger.scheduler import PeriodicJob, Scheduler
from irmsia.ledger.service import CheckpointRecord, Ledger, Receipt
from irmsia.security.policy import SYSTEM, Permission, authorize
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog, Outcome
from irmsia.usecases.context import RequestContext
from irmsia.usecases.verify import Verification, VerificationSummary, VerifyScope, latest_row, summary_of

SYSTEM_CTX = RequestContext(principal=SYSTEM, client_ip=None, request_id=None)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class InclusionProof:
    """Leaf ``index`` is in the tree of ``size`` leaves whose root is ``root``."""

    index: int
    size: int
    entry: bytes
    leaf_hash: bytes
    proof: list[bytes]
    root: bytes
    checkpoint: str | None  # the signed checkpoint at ``size``, when one was signed


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``first`` leaves is a prefix of the tree of ``second`` leaves."""

    first: int
    second: int
    proof: list[bytes]
    first_root: bytes
    second_root: bytes
    first_checkpoint: str | None
    second_checkpoint: str | None


@dataclass(frozen=True)
class HashRecord:
    """A stored object's registration, as the log holds it."""

    index: int
    object_id: str | None
    kind: str | None
    frame: int | None
    sha256: str | None
    size: int | None
    key_id: str | None
    time: str | None


@dataclass(frozen=True)
class AccessRecord:
    """An audit record about an image, as the log holds it."""

    index: int
    event: dict[str, Any]


@dataclass(frozen=True)
class AnchorRecord:
    """One publication of a checkpoint to an external ledger."""

    id: str
    kind: str
    checkpoint_size: int
    status: str  # anchored | failed
    reference: str | None
    receipt: dict[str, Any]
    error: str | None
    created_at: datetime


def _anchor_record(row: LedgerAnchor) -> AnchorRecord:
    return AnchorRecord(
        id=row.id,
        kind=row.kind,
        checkpoint_size=row.checkpoint_size,
        status=row.status,
        reference=row.reference,
        receipt=json.loads(row.receipt or "{}"),
        error=row.error,
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class LedgerStatus:
    """The log at a glance: its size, its latest checkpoint, last verification and anchors.

    ``checkpoint`` and ``verification`` are None before the first one; ``anchors`` holds the
    latest publication of each anchor kind (configured or ever used), None for a configured
    anchor that has not published yet.
    """

    size: int
    checkpoint: CheckpointRecord | None
    verification: VerificationSummary | None
    anchors: Mapping[str, AnchorRecord | None]

    @property
    def unsigned(self) -> int:
        """Entries appended since the latest checkpoint."""
        return self.size - (self.checkpoint.size if self.checkpoint else 0)


@dataclass
class LedgerReads:
    """What auditors and admins may read about the log."""

    sessions: sessionmaker[Session]
    ledger: Ledger
    audit: AuditLog
    anchor_kinds: Sequence[str] = ()  # the configured anchors, so that one never used still shows

    def public_key(self) -> str:
        """The log's verifier key string; public (anyone may check receipts with it)."""
        return self.ledger.public_key

    def _read(self, session: Session, ctx: RequestContext, view: str, **detail: Any) -> None:
        self.audit.record(
            session, ctx, "ledger.read", resource_type="ledger", detail={"view": view, **detail}
        )

    def latest_checkpoint(self, ctx: RequestContext) -> CheckpointRecord:
        """The latest signed checkpoint (one is signed if none exists yet)."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            self._read(session, ctx, "checkpoint")
            latest = self.ledger.latest_checkpoint(session)
            return latest if latest is not None else self.ledger.sign_checkpoint(session)

    def status(self, ctx: RequestContext) -> LedgerStatus:
        """Size, latest checkpoint, last verification and each anchor's latest publication.

        A read-only query: unlike ``latest_checkpoint`` it never signs a checkpoint, and it is
        not audited (see the module docstring).
        """
        authorize(ctx.principal, Permission.READ_LEDGER)
        with self.sessions() as session:
            size = self.ledger.size(session)
            checkpoint = self.ledger.latest_checkpoint(session)
            verification = latest_row(session)
            kinds = list(
                dict.fromkeys([*self.anchor_kinds, *session.scalars(select(LedgerAnchor.kind).distinct())])
            )
            anchors: dict[str, AnchorRecord | None] = {}
            for kind in kinds:
                row = session.scalars(
                    select(LedgerAnchor)
                    .where(LedgerAnchor.kind == kind)
                    .order_by(LedgerAnchor.created_at.desc(), LedgerAnchor.checkpoint_size.desc())
                    .limit(1)
                ).first()
                anchors[kind] = _anchor_record(row) if row is not None else None
            return LedgerStatus(
                size=size,
                checkpoint=checkpoint,
                verification=summary_of(verification) if verification is not None else None,
                anchors=anchors,
            )

    def checkpoints(self, ctx: RequestContext, *, offset: int = 0, limit: int = 50) -> Page[CheckpointRecord]:
        """Signed checkpoints, largest first."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            self._read(session, ctx, "checkpoints")
            items, total = self.ledger.checkpoints(session, offset=offset, limit=limit)
        return Page(items, total, offset, limit)

    def _default_size(self, session: Session) -> int:
        latest = self.ledger.latest_checkpoint(session)
        return latest.size if latest is not None else self.ledger.size(session)

    def inclusion_proof(self, ctx: RequestContext, index: int, size: int | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``size`` leaves (default: latest checkpoint).

        Raises ``InvalidRequest`` for an index or size outside the log.
        """
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            self._read(session, ctx, "inclusion_proof", index=index)
            size = self._default_size(session) if size is None else size
            if not 0 <= index < size:
                raise InvalidRequest("index must be below size")
            tree = self.ledger.tree(session)
            proof = tree.inclusion_proof(index, size)
            entry = self.ledger.entry(session, index)
            checkpoint = self.ledger.checkpoint_at(session, size)
            return InclusionProof(
                index=index,
                size=size,
                entry=entry.data,
                leaf_hash=leaf_hash(entry.data),
                proof=proof,
                root=tree.root(size),
                checkpoint=checkpoint.note if checkpoint else None,
            )

    def consistency_proof(
        self, ctx: RequestContext, first: int, second: int | None = None
    ) -> ConsistencyProof:
        """Proof that the log of ``first`` entries is a prefix of ``second`` (default: latest checkpoint).

        Raises ``InvalidRequest`` unless ``0 < first <= second <= size``.
        """
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            self._read(session, ctx, "consistency_proof", first=first)
            second = self._default_size(session) if second is None else second
            tree = self.ledger.tree(session)
            proof = tree.consistency_proof(first, second)
            first_cp = self.ledger.checkpoint_at(session, first)
            second_cp = self.ledger.checkpoint_at(session, second)
            return ConsistencyProof(
                first=first,
                second=second,
                proof=proof,
                first_root=tree.root(first),
                second_root=tree.root(second),
                first_checkpoint=first_cp.note if first_cp else None,
                second_checkpoint=second_cp.note if second_cp else None,
            )

    def receipt(self, ctx: RequestContext, object_id: str) -> Receipt:
        """The receipt of a stored object; raises ``NotFound`` when the log never recorded it."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            receipt = self.ledger.receipt(session, object_id)
            self._read(session, ctx, "receipt", object_id=object_id)
        return receipt

    def image_hashes(self, ctx: RequestContext, image_id: str) -> list[HashRecord]:
        """The log's registrations of an image's stored objects; ``NotFound`` for an unknown image."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            found = self.ledger.entries_for(session, entries.OBJECT, subject_id=image_id)
            if not found and session.get(Instance, image_id) is None:
                raise NotFound("no such image")
            self._read(session, ctx, "image_hashes", image_id=image_id)
        records = []
        for entry in found:
            body = entries.parse_entry(entry.data) or {}
            records.append(
                HashRecord(
                    index=entry.index,
                    object_id=_opt(body, "object_id", str),
                    kind=_opt(body, "kind", str),
                    frame=_opt(body, "frame", int),
                    sha256=_opt(body, "sha256", str),
                    size=_opt(body, "size", int),
                    key_id=_opt(body, "key_id", str),
                    time=_opt(body, "time", str),
                )
            )
        return records

    def image_access_log(self, ctx: RequestContext, image_id: str) -> list[AccessRecord]:
        """The logged audit records whose resource is this image, oldest first."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            found = self.ledger.entries_for(session, entries.AUDIT, subject_id=image_id)
            if not found and session.get(Instance, image_id) is None:
                raise NotFound("no such image")
            self._read(session, ctx, "image_access_log", image_id=image_id)
        return [AccessRecord(index=e.index, event=entries.parse_entry(e.data) or {}) for e in found]

    def anchors(self, ctx: RequestContext, *, offset: int = 0, limit: int = 50) -> Page[AnchorRecord]:
        """Anchor publications, newest first."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            self._read(session, ctx, "anchors")
            total = session.scalar(select(func.count()).select_from(LedgerAnchor)) or 0
            rows = session.scalars(
                select(LedgerAnchor)
                .order_by(LedgerAnchor.created_at.desc(), LedgerAnchor.checkpoint_size.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            return Page([_anchor_record(row) for row in rows], int(total), offset, limit)


def _opt(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


@dataclass
class Anchoring:
    """Sign checkpoints and publish them to the configured anchors."""

    sessions: sessionmaker[Session]
    ledger: Ledger
    audit: AuditLog
    clock: Clock
    anchors: Sequence[Anchor] = field(default_factory=list)

    def sign_checkpoint(self) -> CheckpointRecord:
        """Sign a checkpoint of the current log (no-op when the log has not grown). Not audited:
        a housekeeping job whose audit record would itself grow the log every time."""
        with transaction(self.sessions) as session:
            return self.ledger.sign_checkpoint(session)

    def publish(self, ctx: RequestContext) -> list[AnchorRecord]:
        """Sign a fresh checkpoint and publish it to every anchor now (admins); audited."""
        authorize(ctx.principal, Permission.ANCHOR_LEDGER)
        records = self._publish(skip_anchored=False)
        with transaction(self.sessions) as session:
            self.audit.record(
                session,
                ctx,
                "ledger.anchor",
                outcome=Outcome.SUCCESS if all(r.status == "anchored" for r in records) else Outcome.FAILURE,
                resource_type="ledger",
                detail={
                    "checkpoint_size": records[0].checkpoint_size if records else None,
                    "anchors": {r.kind: r.status for r in records},
                },
            )
        return records

    def publish_scheduled(self) -> list[AnchorRecord]:
        """The background job: publish the current checkpoint where it is not anchored yet."""
        return self._publish(skip_anchored=True)

    def _publish(self, *, skip_anchored: bool) -> list[AnchorRecord]:
        checkpoint = self.sign_checkpoint()
        opened = open_checkpoint(checkpoint.note, self.ledger.verifier, origin=self.ledger.origin)
        done: set[str] = set()
        if skip_anchored:
            with self.sessions() as session:
                done = set(
                    session.scalars(
                        select(LedgerAnchor.kind).where(
                            LedgerAnchor.checkpoint_size == checkpoint.size, LedgerAnchor.status == "anchored"
                        )
                    )
                )
        rows = []
        for anchor in self.anchors:
            if anchor.kind in done:
                continue
            # Network calls happen outside any database transaction.
            row = LedgerAnchor(
                kind=anchor.kind,
                checkpoint_size=checkpoint.size,
                note=checkpoint.note,
                created_at=self.clock(),
            )
            try:
                receipt: AnchorReceipt = anchor.publish(opened, checkpoint.note)
            except (ExternalServiceError, Conflict) as exc:
                row.status, row.reference, row.receipt = "failed", None, "{}"
                row.error = f"{exc.code}: {exc.detail}"[:255]
            else:
                row.status, row.reference = "anchored", receipt.reference
                row.receipt = json.dumps(receipt.detail, sort_keys=True)
            rows.append(row)
        with transaction(self.sessions) as session:
            session.add_all(rows)
            session.flush()
            return [_anchor_record(row) for row in rows]


@dataclass
class LedgerServices:
    """Everything the front doors need from the ledger, built once by bootstrap."""

    ledger: Ledger
    reads: LedgerReads
    anchoring: Anchoring
    verification: Verification
    anchors: list[Anchor]

    def close(self) -> None:
        for anchor in self.anchors:
            anchor.close()


def build_ledger_services(
    *,
    sessions: sessionmaker[Session],
    clock: Clock,
    audit: AuditLog,
    blobs: BlobStore,
    ledger: Ledger,
    anchors: Sequence[Anchor] = (),
) -> LedgerServices:
    """Wire the ledger use cases (``audit`` logs into ``ledger`` already: see ``AuditLog.log``)."""
    return LedgerServices(
        ledger=ledger,
        reads=LedgerReads(
            sessions=sessions, ledger=ledger, audit=audit, anchor_kinds=[anchor.kind for anchor in anchors]
        ),
        anchoring=Anchoring(
            sessions=sessions, ledger=ledger, audit=audit, clock=clock, anchors=list(anchors)
        ),
        verification=Verification(
            sessions=sessions,
            ledger=ledger,
            blobs=blobs,
            audit=audit,
            clock=clock,
            anchors={anchor.kind: anchor for anchor in anchors},
        ),
        anchors=list(anchors),
    )


def make_scheduler(
    services: LedgerServices,
    *,
    checkpoint_interval: float,
    anchor_interval: float,
    verify_interval: float,
    verify_sample: int = 0,
) -> Scheduler:
    """The background jobs (an interval of 0 disables a job); start/stop it with the app."""
    scope = VerifyScope(sample=verify_sample) if verify_sample > 0 else VerifyScope()
    return Scheduler(
        [
            PeriodicJob("ledger-checkpoint", checkpoint_interval, services.anchoring.sign_checkpoint),
            PeriodicJob(
                "ledger-anchor",
                anchor_interval if services.anchors else 0,
                services.anchoring.publish_scheduled,
            ),
            PeriodicJob(
                "ledger-verify",
                verify_interval,
                lambda: services.verification.run(SYSTEM_CTX, scope, trigger="scheduled"),
            ),
        ]
    )
