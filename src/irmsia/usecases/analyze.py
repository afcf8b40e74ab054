"""AI analysis of stored images: run a provider, store the result, register its hash.

The image is the de-identified DICOM, decrypted in memory; the result (or its error status)
is stored with its canonical-JSON SHA-256, which goes into the ledger in the same
transaction, and the request is audited. Results are read by image, study or patient.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.ai.inputs import AnalysisContext
from irmsia.ai.runner import AnalysisRunner
from irmsia.ai.schema import AnalysisResult
from irmsia.clock import Clock
from irmsia.db.analysis import Analysis
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Patient, Series, Study
from irmsia.errors import IntegrityError, NotFound
from irmsia.ledger.entries import ANALYSIS, digest_entry
from irmsia.ledger.service import Ledger
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Retrieve


@dataclass(frozen=True)
class StoredAnalysis:
    id: str
    image_id: str
    series_id: str
    study_id: str
    patient_pseudonym: str
    result: AnalysisResult


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

    def store(
        self, ctx: RequestContext, image_id: str, result: AnalysisResult, *, provider: str | None = None
    ) -> StoredAnalysis:
        now = self.clock()
        with transaction(self.sessions) as session:
            row = session.execute(
                select(Instance.id, Series.id, Study.id, Patient.pseudonym)
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .join(Patient, Study.patient_id == Patient.id)
                .where(Instance.id == image_id)
            ).first()
            if row is None:
                raise NotFound("no such image")
            _, series_id, study_id, pseudonym = row
            analysis = Analysis(
                image_id=image_id,
                series_id=series_id,
                study_id=study_id,
                patient_pseudonym=pseudonym,
                provider=result.provenance.provider if result.provenance else (provider or "unknown"),
                model=result.model_used[:200],
                status=result.status,
                error_code=result.error.code if result.error else None,
                risk_score=result.risk_score,
                simulated=result.simulated,
                result=result.canonical_json().decode(),
                result_sha256=result.sha256(),
                requested_by=ctx.actor_id,
                created_at=now,
            )
            session.add(analysis)
            session.flush()
            self.ledger.append(
                session, digest_entry(ANALYSIS, analysis.id, image_id, analysis.result_sha256, now)
            )
            self.audit.record(
                session,
                ctx,
                "ai.analyze",
                resource_type="image",
                resource_id=image_id,
                outcome=_outcome(result),
                detail={"analysis_id": analysis.id, "status": result.status, "provider": analysis.provider},
            )
            return StoredAnalysis(analysis.id, image_id, series_id, study_id, pseudonym, result)

    # --- reads ---------------------------------------------------------------------------
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


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError):
        raise IntegrityError("the stored DICOM could not be read") from None


def _outcome(result: AnalysisResult):  # type: ignore[no-untyped-def]
    from irmsia.usecases.audit import Outcome

    return Outcome.SUCCESS if result.status == "ok" else Outcome.FAILURE


__all__: Sequence[str] = ["Analyze", "StoredAnalysis", "to_stored"]
