"""Verify: re-hash stored blobs against the log, the log against its signed and anchored heads.

One run, in three phases so that no database transaction stays open while blobs are read:

1. the log (one read transaction): every stored checkpoint's signature (the most recent
   ``max_checkpoints``) and the last anchored checkpoint's, fetched back from its anchor when
   it can be; then every entry against the leaf hash the log committed, and the log's root at
   each validly signed size against that checkpoint; finally a consistency proof from the
   stored subtree hashes between the anchored and the latest checkpoint;
2. the objects in scope (all, one study, or a random sample), a batch at a time: the
   ``StoredObject.sha256`` column and the blob's actual SHA-256 against the object's entry;
3. the report is stored (``ledger_verifications``) and, for a person's request, audited.

Each problem is one ``Mismatch`` of a precise kind (see ``irmsia.ledger.integrity``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db.base import new_id
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Series, StoredObject, Study
from irmsia.db.ledger import LedgerAnchor, LedgerCheckpoint, LedgerEntry, LedgerNode, LedgerVerification
from irmsia.errors import (
    BlobNotFound,
    ExternalServiceError,
    InvalidRequest,
    LedgerError,
    NotFound,
    ProofError,
    StorageError,
)
from irmsia.ledger import entries
from irmsia.ledger.anchors.base import Anchor, AnchorReceipt
from irmsia.ledger.checkpoint import open_checkpoint
from irmsia.ledger.integrity import EntryRow, LogScan, Mismatch, MismatchKind, TrustedHead, summarise
from irmsia.ledger.service import Ledger
from irmsia.ledger.verifier import VerificationError, verify_consistency
from irmsia.security.policy import Permission, authorize
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog, Outcome
from irmsia.usecases.context import RequestContext

log = logging.getLogger(__name__)

MAX_SAMPLE = 1_000_000


@dataclass(frozen=True)
class VerifyScope:
    """Which stored objects to re-hash: one study, a random sample of N, or (default) all.

    The log itself is always checked whole: it is cheap next to re-hashing blobs.
    """

    study_id: str | None = None
    sample: int | None = None

    def __post_init__(self) -> None:
        if self.study_id is not None and self.sample is not None:
            raise InvalidRequest("choose one of study and sample, not both")
        if self.sample is not None and not 1 <= self.sample <= MAX_SAMPLE:
            raise InvalidRequest(f"sample must be between 1 and {MAX_SAMPLE}")

    @property
    def label(self) -> str:
        if self.study_id is not None:
            return f"study:{self.study_id}"
        if self.sample is not None:
            return f"sample:{self.sample}"
        return "all"


@dataclass(frozen=True)
class VerificationReport:
    """The outcome of one run. ``mismatches`` is capped; ``mismatch_count`` is the true total."""

    id: str
    ok: bool
    trigger: str
    scope: str
    started_at: datetime
    finished_at: datetime
    log_size: int
    checkpoint_size: int | None
    anchored_size: int | None
    anchored_kind: str | None
    checkpoints_checked: int
    entries_checked: int
    objects_checked: int
    bytes_hashed: int
    mismatch_count: int
    summary: dict[str, int]
    mismatches: list[Mismatch]
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        """The kinds of mismatch found (for a quick test or a dashboard)."""
        return set(self.summary)


@dataclass
class _LogResult:
    log_size: int = 0
    checkpoint_size: int | None = None
    anchored_size: int | None = None
    anchored_kind: str | None = None
    checkpoints_checked: int = 0
    entries_checked: int = 0
    bad_indexes: set[int] = field(default_factory=set)
    mismatches: list[Mismatch] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Anchored:
    kind: str
    note: str


@dataclass(frozen=True)
class _Target:
    object_id: str
    storage_key: str
    blob_offset: int
    size: int
    db_sha256: str
    entry_index: int | None
    entry_sha256: str | None


@dataclass
class Verification:
    """Run verifications and read the last result.

    ``anchors`` maps anchor kind → anchor, used to fetch the last anchored checkpoint back from
    where it was published (the database copy is used, with a warning, when that fails).
    """

    sessions: sessionmaker[Session]
    ledger: Ledger
    blobs: BlobStore
    audit: AuditLog
    clock: Clock
    anchors: Mapping[str, Anchor] = field(default_factory=dict)
    batch_size: int = 5000
    max_checkpoints: int = 1000
    max_reported: int = 1000

    def run(
        self, ctx: RequestContext, scope: VerifyScope | None = None, *, trigger: str = "api"
    ) -> VerificationReport:
        """Verify and store the report; a person's run is audited as ``ledger.verify``.

        Raises ``NotFound`` for an unknown study. Mismatches are results, not errors.
        """
        authorize(ctx.principal, Permission.VERIFY_LEDGER)
        scope = scope or VerifyScope()
        started = self.clock()
        anchored = self._fetch_anchored()
        with transaction(self.sessions) as session:
            result = self._check_log(session, anchored)
        objects_checked, bytes_hashed = self._check_objects(scope, result)
        finished = self.clock()
        mismatches = result.mismatches
        report = VerificationReport(
            id="",
            ok=not mismatches,
            trigger=trigger,
            scope=scope.label,
            started_at=started,
            finished_at=finished,
            log_size=result.log_size,
            checkpoint_size=result.checkpoint_size,
            anchored_size=result.anchored_size,
            anchored_kind=result.anchored_kind,
            checkpoints_checked=result.checkpoints_checked,
            entries_checked=result.entries_checked,
            objects_checked=objects_checked,
            bytes_hashed=bytes_hashed,
            mismatch_count=len(mismatches),
            summary=summarise(mismatches),
            mismatches=mismatches[: self.max_reported],
            warnings=result.warnings,
        )
        report_id = new_id()
        if trigger != "scheduled":
            # Audit first, in its own transaction: when the log refuses appends (its stored size
            # was tampered with) the report must still be stored and returned, saying so.
            try:
                with transaction(self.sessions) as session:
                    self.audit.record(
                        session,
                        ctx,
                        "ledger.verify",
                        outcome=Outcome.SUCCESS,
                        resource_type="ledger",
                        detail={
                            "verification_id": report_id,
                            "scope": scope.label,
                            "ok": report.ok,
                            **report.summary,
                        },
                    )
            except LedgerError as exc:
                report.warnings.append(f"this run could not be audited: the log refuses appends ({exc.code})")
        with transaction(self.sessions) as session:
            row = LedgerVerification(
                id=report_id,
                trigger=trigger,
                scope=scope.label,
                actor_id=ctx.actor_id,
                ok=report.ok,
                objects_checked=objects_checked,
                bytes_hashed=bytes_hashed,
                entries_checked=report.entries_checked,
                mismatch_count=report.mismatch_count,
                report=json.dumps(_report_body(report), sort_keys=True),
                started_at=started,
                finished_at=finished,
            )
            session.add(row)
            session.flush()
        if not report.ok:
            log.warning(
                "ledger verification %s found %d mismatches: %s",
                row.id,
                report.mismatch_count,
                report.summary,
            )
        return _with_id(report, row.id)

    def last(self, ctx: RequestContext) -> VerificationReport:
        """The most recent stored result; raises ``NotFound`` before the first run. Audited."""
        authorize(ctx.principal, Permission.READ_LEDGER)
        with transaction(self.sessions) as session:
            row = latest_row(session)
            if row is None:
                raise NotFound("no verification has run yet")
            self.audit.record(
                session, ctx, "ledger.read", resource_type="ledger", detail={"view": "verification"}
            )
            return _from_row(row)

    # --- phase 1: the log ---------------------------------------------------------------

    def _fetch_anchored(self) -> tuple[_Anchored | None, list[str]]:
        """The last successfully anchored note, from its anchor when reachable."""
        with self.sessions() as session:
            row = session.scalars(
                select(LedgerAnchor)
                .where(LedgerAnchor.status == "anchored")
                .order_by(LedgerAnchor.checkpoint_size.desc(), LedgerAnchor.created_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return None, []
        anchor = self.anchors.get(row.kind)
        if anchor is None:
            return _Anchored(row.kind, row.note), [
                f"anchor {row.kind} is not configured; used the stored copy"
            ]
        try:
            detail = json.loads(row.receipt or "{}")
            note = anchor.fetch(AnchorReceipt(kind=row.kind, reference=row.reference or "", detail=detail))
        except (ExternalServiceError, NotFound, ValueError):
            return _Anchored(row.kind, row.note), [
                f"anchor {row.kind} could not be read back; used the stored copy"
            ]
        warnings = (
            [] if note == row.note else [f"the stored copy of the {row.kind} anchor differs from the anchor"]
        )
        return _Anchored(row.kind, note), warnings

    def _check_log(self, session: Session, anchored_info: tuple[_Anchored | None, list[str]]) -> _LogResult:
        anchored, warnings = anchored_info
        result = _LogResult(warnings=list(warnings))
        result.log_size = self.ledger.size(session)
        heads: list[TrustedHead] = []
        rows = session.scalars(
            select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(self.max_checkpoints)
        ).all()
        latest: TrustedHead | None = None
        for row in rows:
            result.checkpoints_checked += 1
            head = self._trusted(row.note, "checkpoint", result, expect=(row.size, row.root_hash))
            if head is not None:
                heads.append(head)
                if latest is None:
                    latest = TrustedHead(head.size, head.root, "latest checkpoint")
                    heads[-1] = latest
        if latest is not None:
            result.checkpoint_size = latest.size
        elif not rows:
            result.warnings.append("no signed checkpoint yet: entries are checked against stored hashes only")
        anchored_head: TrustedHead | None = None
        if anchored is not None:
            result.checkpoints_checked += 1
            anchored_head = self._trusted(anchored.note, f"anchored checkpoint ({anchored.kind})", result)
            if anchored_head is not None:
                heads.append(anchored_head)
                result.anchored_size = anchored_head.size
                result.anchored_kind = anchored.kind
        expected = max([result.log_size, *(h.size for h in heads)])
        scan = LogScan(expected, heads)
        self._scan(session, scan, expected)
        result.mismatches += scan.finish()
        result.entries_checked = scan.entries_checked
        result.bad_indexes = scan.bad_indexes
        result.mismatches += self._check_stored_nodes(session, result.log_size, latest, anchored_head)
        return result

    def _trusted(
        self, note: str, label: str, result: _LogResult, *, expect: tuple[int, bytes] | None = None
    ) -> TrustedHead | None:
        """The head of a checkpoint note whose signature verifies; else a ``checkpoint_forged``."""
        size_hint = expect[0] if expect else None
        try:
            checkpoint = open_checkpoint(note, self.ledger.verifier, origin=self.ledger.origin)
        except ProofError:
            result.mismatches.append(
                Mismatch(
                    MismatchKind.CHECKPOINT_FORGED,
                    f"the {label}'s signature does not verify with the log's key",
                    checkpoint_size=size_hint,
                )
            )
            return None
        if expect is not None and (checkpoint.size, checkpoint.root_hash) != expect:
            result.mismatches.append(
                Mismatch(
                    MismatchKind.CHECKPOINT_FORGED,
                    f"the {label}'s stored size or root differs from its signed note",
                    checkpoint_size=size_hint,
                )
            )
            return None
        return TrustedHead(checkpoint.size, checkpoint.root_hash, label)

    def _scan(self, session: Session, scan: LogScan, expected: int) -> None:
        step = self.batch_size
        for start in range(0, expected, step):
            end = min(expected, start + step)
            # Plain column tuples, not ORM objects: this loop reads every row of the log.
            found = session.execute(
                select(
                    LedgerEntry.idx,
                    LedgerEntry.kind,
                    LedgerEntry.ref_id,
                    LedgerEntry.subject_id,
                    LedgerEntry.data,
                ).where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
            ).all()
            rows = {row[0]: EntryRow(*row) for row in found}
            # Level-0 node ids are the leaf indexes themselves (see irmsia.ledger.sqlstore).
            leaves: dict[int, bytes] = dict(
                session.execute(
                    select(LedgerNode.id, LedgerNode.hash).where(LedgerNode.id >= start, LedgerNode.id < end)
                ).all()
            )
            scan.feed(start, end, rows, leaves)

    def _check_stored_nodes(
        self, session: Session, log_size: int, latest: TrustedHead | None, anchored: TrustedHead | None
    ) -> list[Mismatch]:
        """The subtree hashes proofs are served from must reproduce the heads and chain them."""
        found: list[Mismatch] = []
        tree = self.ledger.tree(session)
        if latest is not None and 0 < latest.size <= log_size:
            try:
                ok = tree.root(latest.size) == latest.root
            except LedgerError:
                ok = False
            if not ok:
                found.append(
                    Mismatch(
                        MismatchKind.CHECKPOINT_INCONSISTENT,
                        "the log's stored subtree hashes do not reproduce the latest checkpoint",
                        checkpoint_size=latest.size,
                    )
                )
        if latest is None or anchored is None or anchored.size == 0:
            return found
        low, high = sorted((anchored, latest), key=lambda head: head.size)
        if high.size > log_size:
            return found  # already reported: the log is shorter than a signed head
        try:
            proof = tree.consistency_proof(low.size, high.size)
            verify_consistency(low.size, high.size, proof, low.root, high.root)
        except (VerificationError, LedgerError):
            found.append(
                Mismatch(
                    MismatchKind.CHECKPOINT_INCONSISTENT,
                    "the anchored checkpoint and the latest checkpoint are not consistent",
                    checkpoint_size=anchored.size,
                )
            )
        return found

    # --- phase 2: the objects -------------------------------------------------------------

    def _check_objects(self, scope: VerifyScope, result: _LogResult) -> tuple[int, int]:
        checked = hashed = 0
        for batch in self._object_batches(scope):
            for target in batch:
                checked += 1
                hashed += self._check_object(target, result)
        return checked, hashed

    def _object_batches(self, scope: VerifyScope) -> Iterator[list[_Target]]:
        """Yield lists of ``_Target``, each read in a short transaction of its own."""
        if scope.sample is not None:
            with self.sessions() as session:
                ids: Sequence[str] = session.scalars(
                    select(StoredObject.id).order_by(func.random()).limit(scope.sample)
                ).all()
            for start in range(0, len(ids), self.batch_size):
                chunk = ids[start : start + self.batch_size]
                with self.sessions() as session:
                    yield self._targets(session, select(StoredObject).where(StoredObject.id.in_(chunk)))
            return
        if scope.study_id is not None:
            with self.sessions() as session:
                if session.get(Study, scope.study_id) is None:
                    raise NotFound("no such study")
        last = ""
        while True:
            query = select(StoredObject).where(StoredObject.id > last)
            if scope.study_id is not None:
                query = (
                    query.join(Instance, StoredObject.instance_id == Instance.id)
                    .join(Series, Instance.series_id == Series.id)
                    .where(Series.study_id == scope.study_id)
                )
            with self.sessions() as session:
                batch = self._targets(session, query.order_by(StoredObject.id).limit(self.batch_size))
            if not batch:
                return
            yield batch
            last = batch[-1].object_id

    def _targets(self, session: Session, query: Any) -> list[_Target]:
        objects = session.scalars(query).all()
        if not objects:
            return []
        latest: dict[str, LedgerEntry] = {}
        for row in session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.kind == entries.OBJECT, LedgerEntry.ref_id.in_([o.id for o in objects]))
            .order_by(LedgerEntry.idx)
        ):
            latest[row.ref_id or ""] = row
        targets = []
        for obj in objects:
            entry = latest.get(obj.id)
            recorded = entries.parse_entry(entry.data) if entry is not None else None
            digest = recorded.get("sha256") if recorded is not None else None
            targets.append(
                _Target(
                    object_id=obj.id,
                    storage_key=obj.storage_key,
                    blob_offset=obj.blob_offset,
                    size=obj.size,
                    db_sha256=obj.sha256,
                    entry_index=entry.idx if entry is not None else None,
                    entry_sha256=digest if isinstance(digest, str) else None,
                )
            )
        return targets

    def _check_object(self, target: _Target, result: _LogResult) -> int:
        """Check one object; returns the number of blob bytes hashed."""
        found = result.mismatches
        trusted = target.entry_index is not None and target.entry_index not in result.bad_indexes
        if target.entry_index is None:
            found.append(
                Mismatch(
                    MismatchKind.ENTRY_DELETED,
                    "no log entry records this object",
                    object_id=target.object_id,
                )
            )
        elif trusted and target.entry_sha256 != target.db_sha256:
            found.append(
                Mismatch(
                    MismatchKind.DB_HASH_EDITED,
                    "the stored object's sha256 column differs from its log entry",
                    index=target.entry_index,
                    object_id=target.object_id,
                )
            )
        # Compare the blob with the log when its entry is intact, else with the database column.
        expected = target.entry_sha256 if trusted else target.db_sha256
        digest = hashlib.sha256()
        size = 0
        try:
            with self.blobs.iter_chunks(
                target.storage_key, offset=target.blob_offset, length=target.size
            ) as reader:
                for chunk in reader:
                    digest.update(chunk)
                    size += len(chunk)
        except BlobNotFound:
            found.append(
                Mismatch(
                    MismatchKind.BLOB_MISSING,
                    "the blob store holds no blob for this object",
                    index=target.entry_index,
                    object_id=target.object_id,
                )
            )
            return 0
        except StorageError as exc:
            result.warnings.append(f"object {target.object_id} could not be read ({exc.code})")
            return size
        if digest.hexdigest() != expected:
            found.append(
                Mismatch(
                    MismatchKind.BLOB_MODIFIED,
                    "the blob's SHA-256 differs from the digest the log recorded",
                    index=target.entry_index,
                    object_id=target.object_id,
                )
            )
        return size


@dataclass(frozen=True)
class VerificationSummary:
    """The headline of a stored run, without its mismatch list (for dashboards)."""

    id: str
    ok: bool
    trigger: str
    scope: str
    started_at: datetime
    finished_at: datetime
    objects_checked: int
    entries_checked: int
    mismatch_count: int


def latest_row(session: Session) -> LedgerVerification | None:
    """The most recent stored run, or None before the first one (a plain read)."""
    return session.scalars(
        select(LedgerVerification).order_by(LedgerVerification.started_at.desc()).limit(1)
    ).first()


def summary_of(row: LedgerVerification) -> VerificationSummary:
    return VerificationSummary(
        id=row.id,
        ok=row.ok,
        trigger=row.trigger,
        scope=row.scope,
        started_at=row.started_at,
        finished_at=row.finished_at,
        objects_checked=row.objects_checked,
        entries_checked=row.entries_checked,
        mismatch_count=row.mismatch_count,
    )


def _with_id(report: VerificationReport, report_id: str) -> VerificationReport:
    return VerificationReport(**{**report.__dict__, "id": report_id})


def _report_body(report: VerificationReport) -> dict[str, Any]:
    return {
        "log_size": report.log_size,
        "checkpoint_size": report.checkpoint_size,
        "anchored_size": report.anchored_size,
        "anchored_kind": report.anchored_kind,
        "checkpoints_checked": report.checkpoints_checked,
        "summary": report.summary,
        "mismatches": [m.as_dict() for m in report.mismatches],
        "warnings": report.warnings,
    }


def _from_row(row: LedgerVerification) -> VerificationReport:
    body = json.loads(row.report or "{}")
    mismatches = [
        Mismatch(
            kind=MismatchKind(item["kind"]),
            detail=item["detail"],
            index=item.get("index"),
            object_id=item.get("object_id"),
            checkpoint_size=item.get("checkpoint_size"),
        )
        for item in body.get("mismatches", [])
    ]
    return VerificationReport(
        id=row.id,
        ok=row.ok,
        trigger=row.trigger,
        scope=row.scope,
        started_at=row.started_at,
        finished_at=row.finished_at,
        log_size=body.get("log_size", 0),
        checkpoint_size=body.get("checkpoint_size"),
        anchored_size=body.get("anchored_size"),
        anchored_kind=body.get("anchored_kind"),
        checkpoints_checked=body.get("checkpoints_checked", 0),
        entries_checked=row.entries_checked,
        objects_checked=row.objects_checked,
        bytes_hashed=row.bytes_hashed,
        mismatch_count=row.mismatch_count,
        summary=body.get("summary", {}),
        mismatches=mismatches,
        warnings=body.get("warnings", []),
    )
