"""AI analysis of stored images: run a provider, store the result, register its hash.

The image is the de-identified DICOM, decrypted in memory; the result (or its error status)
is stored with its canonical-JSON SHA-256, which goes into the ledger in the same
transaction, and the request is audited. Results are read by image, study or patient.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.ai.inputs import AnalysisContext
from irmsia.ai.runner import AnalysisRunner
from irmsia.ai.schema import AnalysisResult
from irmsia.clock import Clock
from irmsia.crypto.digest import sha256_hex
from irmsia.db import aistatus
from irmsia.db.aistatus import StudyAI
from irmsia.db.analysis import Analysis
from irmsia.db.base import new_id
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Patient, Series, Study
from irmsia.errors import IntegrityError, NotFound
from irmsia.ledger.entries import ANALYSIS, digest_entry
from irmsia.ledger.service import Ledger
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog, AuditRecord
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Retrieve

_ANALYSES: Table = Analysis.__table__  # type: ignore[assignment]
_NEW_ANALYSIS = insert(_ANALYSES)
_IMAGE_PLACES = (  # image id -> its series, study and patient pseudonym
    select(Instance.id, Series.id, Study.id, Patient.pseudonym)
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Series.study_id == Study.id)
    .join(Patient, Study.patient_id == Patient.id)
    .where(Instance.id.in_(bindparam("ids", expanding=True)))
)


@dataclass(frozen=True)
class StoredAnalysis:
    id: str
    image_id: str
    series_id: str
    study_id: str
    patient_pseudonym: str
    result: AnalysisResult


LATENCY_WINDOW = timedelta(hours=24)
LATENCY_SAMPLE = 2000  # the newest analyses of the window whose processing times are summarised


@dataclass(frozen=True)
class AILatency:
    """Processing times (seconds) of the analyses stored in the last ``LATENCY_WINDOW``.

    ``count`` and ``errors`` cover the whole window; the mean and 95th percentile cover the
    newest ``sample`` of them (error results included: a timeout is latency too). None when
    there was no analysis.
    """

    count: int
    errors: int
    sample: int
    mean_seconds: float | None
    p95_seconds: float | None


def latency_stats(seconds: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and the nearest-rank 95th percentile of ``seconds``; (None, None) when empty."""
    if not seconds:
        return None, None
    ordered = sorted(seconds)
    rank = max(math.ceil(0.95 * len(ordered)), 1)
    return sum(ordered) / len(ordered), ordered[rank - 1]


def _processing_time(text: str) -> float | None:
    try:
        value = json.loads(text).get("processing_time")
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


STUDY_LIMIT = 100  # images analysed at most by one analyze_study call without image ids


@dataclass(frozen=True)
class StudyAnalysis:
    """What ``analyze_study`` did: one stored result per analysed image, of ``images`` candidates."""

    results: list[StoredAnalysis]
    images: int

    @property
    def failed(self) -> int:
        return sum(1 for item in self.results if item.result.status != "ok")


@dataclass
class Analyze:
    sessions: sessionmaker[Session]
    runner: AnalysisRunner
    retrieve: Retrieve
    ledger: Ledger
    audit: AuditLog
    clock: Clock

    def analyze(
        self,
        ctx: RequestContext,
        image_id: str,
        *,
        modality: str | None = None,
        additional_context: str = "",
        provider: str | None = None,
    ) -> StoredAnalysis:
        """Analyse one stored image now. Provider failures give an error-status result."""
        authorize(ctx.principal, Permission.ANALYZE)
        context = AnalysisContext(modality=modality or None, additional_context=additional_context)
        download = self.retrieve.download(ctx, image_id, "dicom")
        ds = _read(b"".join(download.chunks))
        result = self.runner.analyze(ds, context, provider=provider)
        return self.store(ctx, image_id, result, provider=provider)

    def analyze_dataset(self, ctx: RequestContext, image_id: str, ds: Dataset) -> StoredAnalysis:
        """The pipeline's step: analyse a just-indexed image from its in-memory dataset."""
        return self.store(ctx, image_id, self.runner.analyze(ds, AnalysisContext()))

    def auto_analyze(self, ctx: RequestContext, image_id: str, ds: Dataset) -> str | None:
        """``analyze_dataset`` for the ingest pipeline: the stored result's error code, or None
        when the analysis succeeded. Raises what ``analyze_dataset`` raises (not an image, …)."""
        error = self.analyze_dataset(ctx, image_id, ds).result.error
        return error.code if error is not None else None

    def analyze_datasets(
        self, ctx: RequestContext, items: Sequence[tuple[str, Dataset]]
    ) -> list[StoredAnalysis]:
        """Several just-indexed images from their in-memory datasets, as (image id, dataset) pairs.

        One batch per provider (``AnalysisRunner.analyze_datasets``), then one transaction for
        all results (``store_many``). Raises what those raise, e.g. ``InvalidDicom`` when one is
        not an image; nothing is stored then.
        """
        authorize(ctx.principal, Permission.ANALYZE)
        results = self.runner.analyze_datasets([ds for _, ds in items], AnalysisContext())
        return self.store_many(ctx, [(image_id, r) for (image_id, _), r in zip(items, results, strict=True)])

    def store(
        self, ctx: RequestContext, image_id: str, result: AnalysisResult, *, provider: str | None = None
    ) -> StoredAnalysis:
        """Store one result; see ``store_many``."""
        return self.store_many(ctx, [(image_id, result)], provider=provider)[0]

    def store_many(
        self,
        ctx: RequestContext,
        items: Sequence[tuple[str, AnalysisResult]],
        *,
        provider: str | None = None,
    ) -> list[StoredAnalysis]:
        """Store (image id, result) pairs in one transaction, in order.

        Each result gets its row (linked to image, series, study and patient pseudonym), its
        digest in the ledger (one append for all) and an ``ai.analyze`` audit record. ``NotFound``
        when an image is unknown: nothing is stored then.
        """
        if not items:
            return []
        now = self.clock()
        with transaction(self.sessions) as session:
            wanted = sorted({image_id for image_id, _ in items})
            found = {
                row[0]: (row[1], row[2], row[3])
                for row in session.execute(_IMAGE_PLACES, {"ids": wanted}).all()
            }
            if len(found) != len(wanted):
                raise NotFound("no such image")
            rows: list[dict[str, Any]] = []
            for image_id, result in items:
                series_id, study_id, pseudonym = found[image_id]
                canonical = result.canonical_json()  # what result.sha256() hashes
                rows.append(
                    {
                        "id": new_id(),
                        "image_id": image_id,
                        "series_id": series_id,
                        "study_id": study_id,
                        "patient_pseudonym": pseudonym,
                        "provider": result.provenance.provider
                        if result.provenance
                        else (provider or "unknown"),
                        "model": result.model_used[:200],
                        "status": result.status,
                        "error_code": result.error.code if result.error else None,
                        "risk_score": result.risk_score,
                        "simulated": result.simulated,
                        "result": canonical.decode(),
                        "result_sha256": sha256_hex(canonical),
                        "requested_by": ctx.actor_id,
                        "created_at": now,
                    }
                )
            # Core, not the ORM unit of work: every analysed image pays for this transaction.
            session.execute(_NEW_ANALYSIS, rows)
            self.audit.record_many(  # the digests and the audit records: one log append
                session,
                [
                    AuditRecord(
                        ctx,
                        "ai.analyze",
                        outcome=_outcome(result),
                        resource_type="image",
                        resource_id=row["image_id"],
                        detail={
                            "analysis_id": row["id"],
                            "status": result.status,
                            "provider": row["provider"],
                        },
                    )
                    for row, (_, result) in zip(rows, items, strict=True)
                ],
                after=[
                    digest_entry(ANALYSIS, row["id"], row["image_id"], row["result_sha256"], now)
                    for row in rows
                ],
            )
            return [
                StoredAnalysis(
                    row["id"],
                    row["image_id"],
                    row["series_id"],
                    row["study_id"],
                    row["patient_pseudonym"],
                    result,
                )
                for row, (_, result) in zip(rows, items, strict=True)
            ]

    def analyze_study(
        self, ctx: RequestContext, study_id: str, *, image_ids: Sequence[str] = (), limit: int = STUDY_LIMIT
    ) -> StudyAnalysis:
        """Analyse a study's stored images that have pixel data (or the given ones of them).

        Without ``image_ids``, at most ``limit`` images are analysed: evenly spaced through the
        study in series and instance order when it has more. Each image is analysed, stored and
        audited as by ``analyze``. ``NotFound`` for an unknown study, a study without images to
        analyse, or an image id that is not one of the study's.
        """
        authorize(ctx.principal, Permission.ANALYZE)
        with transaction(self.sessions) as session:
            rows = session.execute(
                select(Instance.id)
                .join(Series, Instance.series_id == Series.id)
                .where(Series.study_id == study_id, Instance.status == "stored", Instance.frames > 0)
                .order_by(
                    Series.series_number.is_(None),
                    Series.series_number,
                    Series.id,
                    Instance.instance_number.is_(None),
                    Instance.instance_number,
                    Instance.created_at,
                )
            ).all()
        candidates = [row[0] for row in rows]
        if not candidates:
            raise NotFound("no such study, or no image of it to analyse")
        if image_ids:
            unknown = set(image_ids) - set(candidates)
            if unknown:
                raise NotFound("no such image in this study")
            chosen = list(dict.fromkeys(image_ids))
        else:
            chosen = evenly_spaced(candidates, limit)
        results = [self.analyze(ctx, image_id) for image_id in chosen]
        return StudyAnalysis(results=results, images=len(candidates))

    # --- reads ---------------------------------------------------------------------------
    def latest_for_study(self, ctx: RequestContext, study_id: str) -> list[StoredAnalysis]:
        """The newest result of each analysed image of a study, oldest analysis first (audited)."""
        authorize(ctx.principal, Permission.READ_RESULTS)
        with transaction(self.sessions) as session:
            latest = sorted(self.latest_by_image(session, study_id).values(), key=lambda r: r.created_at)
            self.audit.record(
                session,
                ctx,
                "ai.read",
                resource_type="study",
                resource_id=study_id,
                detail={"returned": len(latest), "view": "latest"},
            )
            return [to_stored(row) for row in latest]

    def study_summaries(self, ctx: RequestContext, study_ids: Sequence[str]) -> dict[str, StudyAI]:
        """Each study's AI status and risk (see ``irmsia.db.aistatus``), audited as one read."""
        authorize(ctx.principal, Permission.READ_RESULTS)
        with transaction(self.sessions) as session:
            found = aistatus.study_summaries(session, study_ids)
            self.audit.record(
                session,
                ctx,
                "ai.read",
                resource_type="study",
                detail={"returned": len(found), "view": "summary"},
            )
        return found

    def for_image(self, ctx: RequestContext, image_id: str) -> list[StoredAnalysis]:
        return self._list(ctx, "image", image_id, Analysis.image_id == image_id)

    def for_study(self, ctx: RequestContext, study_id: str) -> list[StoredAnalysis]:
        return self._list(ctx, "study", study_id, Analysis.study_id == study_id)

    def for_patient(self, ctx: RequestContext, pseudonym: str) -> list[StoredAnalysis]:
        return self._list(ctx, "patient", pseudonym, Analysis.patient_pseudonym == pseudonym)

    def latest_by_image(self, session: Session, study_id: str) -> dict[str, Analysis]:
        """The newest analysis of each image of a study (no audit: callers audit their read)."""
        rows = session.scalars(
            select(Analysis).where(Analysis.study_id == study_id).order_by(Analysis.created_at, Analysis.id)
        ).all()
        latest: dict[str, Analysis] = {}
        for row in rows:
            latest[row.image_id] = row
        return latest

    def latency(self, ctx: RequestContext) -> AILatency:
        """How long analyses took over the last 24 hours, from the stored results. Not audited:
        a dashboard figure (counts and durations only), read on every dashboard view."""
        authorize(ctx.principal, Permission.READ_SYSTEM)
        since = self.clock() - LATENCY_WINDOW
        with self.sessions() as session:
            counts = dict(
                session.execute(
                    select(Analysis.status, func.count())
                    .where(Analysis.created_at >= since)
                    .group_by(Analysis.status)
                ).all()
            )
            results = session.scalars(
                select(Analysis.result)
                .where(Analysis.created_at >= since)
                .order_by(Analysis.created_at.desc())
                .limit(LATENCY_SAMPLE)
            ).all()
        times = [t for t in map(_processing_time, results) if t is not None]
        mean, p95 = latency_stats(times)
        return AILatency(
            count=int(sum(counts.values())),
            errors=int(sum(n for status, n in counts.items() if status != "ok")),
            sample=len(times),
            mean_seconds=mean,
            p95_seconds=p95,
        )

    def _list(self, ctx: RequestContext, kind: str, key: str, condition: object) -> list[StoredAnalysis]:
        authorize(ctx.principal, Permission.READ_RESULTS)
        with transaction(self.sessions) as session:
            rows = session.scalars(
                select(Analysis).where(condition).order_by(Analysis.created_at.desc(), Analysis.id)  # type: ignore[arg-type]
            ).all()
            self.audit.record(
                session, ctx, "ai.read", resource_type=kind, resource_id=key, detail={"returned": len(rows)}
            )
            return [to_stored(row) for row in rows]


def to_stored(row: Analysis) -> StoredAnalysis:
    """Parse a stored result, refusing one whose bytes no longer match their recorded hash."""
    result = AnalysisResult.model_validate(json.loads(row.result))
    if result.sha256() != row.result_sha256:
        raise IntegrityError("a stored AI result does not match its recorded hash")
    return StoredAnalysis(row.id, row.image_id, row.series_id, row.study_id, row.patient_pseudonym, result)


def evenly_spaced(items: Sequence[str], limit: int) -> list[str]:
    """``items`` when there are at most ``limit``; else ``limit`` of them, evenly spaced, ends included."""
    if len(items) <= limit:
        return list(items)
    if limit <= 1:
        return list(items[: max(limit, 0)])
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError):
        raise IntegrityError("the stored DICOM could not be read") from None


def _outcome(result: AnalysisResult):  # type: ignore[no-untyped-def]
    from irmsia.usecases.audit import Outcome

    return Outcome.SUCCESS if result.status == "ok" else Outcome.FAILURE


__all__: Sequence[str] = [
    "AILatency",
    "Analyze",
    "StoredAnalysis",
    "StudyAnalysis",
    "evenly_spaced",
    "latency_stats",
    "to_stored",
]
