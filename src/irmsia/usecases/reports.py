"""Per-study diagnostic reports from AI results, their downloads, and radiologist sign-off.

A study's report is built on request from the newest AI result of each analysed image and
the study's latest sign-off. An unsigned report is "preliminary — AI-generated"; a
radiologist confirms, edits or rejects it, and the sign-off records who, when and the
SHA-256 of the report content signed (registered in the ledger). Every step is audited.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.ai.schema import AnalysisResult
from irmsia.clock import Clock
from irmsia.db.analysis import ReportSignoff
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Study
from irmsia.db.index import study_with_series
from irmsia.db.ledger import LedgerEntry
from irmsia.errors import BlobNotFound, Conflict, InvalidRequest, NotFound, PermissionDenied
from irmsia.ledger.entries import REPORT, digest_entry
from irmsia.ledger.service import Ledger
from irmsia.reports import model as rm
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.analyze import Analyze, to_stored
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Retrieve

Format = Literal["json", "pdf", "sr", "fhir"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "pdf": "application/pdf",
    "sr": "application/dicom",
    "fhir": "application/fhir+json",
}
_ACTIONS = {
    "confirm": rm.SignOffAction.CONFIRMED,
    "edit": rm.SignOffAction.EDITED,
    "reject": rm.SignOffAction.REJECTED,
}


@dataclass(frozen=True)
class RenderedReport:
    report: rm.Report
    media_type: str
    content: bytes


@dataclass
class Reports:
    sessions: sessionmaker[Session]
    analyze: Analyze
    retrieve: Retrieve
    ledger: Ledger
    audit: AuditLog
    clock: Clock

    def build(self, ctx: RequestContext, study_id: str) -> rm.Report:
        """The study's current report, its content digest registered in the ledger.

        The first time a given report content is produced, its SHA-256 is appended to the log
        (in the same transaction as the read's audit record), so the PDF can quote the ledger
        hash and index. ``NotFound`` when no image of the study has an AI result.
        """
        authorize(ctx.principal, Permission.READ_RESULTS)
        with transaction(self.sessions) as session:
            report = self._register(session, self._build(ctx, session, study_id), study_id)
            self.audit.record(
                session,
                ctx,
                "report.read",
                resource_type="study",
                resource_id=study_id,
                detail={"status": report.status.value},
            )
        return report

    def render(self, ctx: RequestContext, study_id: str, fmt: Format) -> RenderedReport:
        """The report as JSON, PDF, DICOM SR or a FHIR R4 bundle."""
        report = self.build(ctx, study_id)
        if fmt == "json":
            content = report.to_json().encode()
        elif fmt == "pdf":
            from irmsia.reports.pdf import build_pdf

            content = build_pdf(report)
        elif fmt == "sr":
            from irmsia.reports.sr import build_sr

            content = build_sr(report)
        elif fmt == "fhir":
            from irmsia.reports.fhir import build_fhir_json

            content = build_fhir_json(report)
        else:
            raise InvalidRequest("format must be json, pdf, sr or fhir")
        return RenderedReport(report, MEDIA_TYPES[fmt], content)

    def sign(
        self,
        ctx: RequestContext,
        study_id: str,
        decision: str,
        *,
        narrative: str | None = None,
        comment: str | None = None,
    ) -> rm.Report:
        """A radiologist confirms, edits (with a new narrative) or rejects the AI report."""
        principal = authorize(ctx.principal, Permission.SIGN_REPORTS)
        action = _ACTIONS.get(decision)
        if action is None:
            raise InvalidRequest("decision must be confirm, edit or reject")
        if action is rm.SignOffAction.EDITED and not (narrative and narrative.strip()):
            raise InvalidRequest("an edit needs the corrected narrative")
        if action is not rm.SignOffAction.EDITED and narrative:
            raise InvalidRequest("a narrative is only given with an edit")
        now = self.clock()
        with transaction(self.sessions) as session:
            current = self._build(ctx, session, study_id)
            if current.status is not rm.ReportStatus.PRELIMINARY:
                raise Conflict("the report is already signed; it cannot be signed again")
            signoff = rm.SignOff(
                user_id=_opaque(principal.id),
                username=principal.username[:64] or "unknown",
                signed_at=now,
                action=action,
                edited_narrative=narrative.strip() if narrative else None,
                comment=comment.strip() if comment else None,
            )
            status = (
                rm.ReportStatus.REJECTED if action is rm.SignOffAction.REJECTED else rm.ReportStatus.FINAL
            )
            signed = current.model_copy(update={"status": status, "sign_off": signoff})
            signed = rm.parse_report(signed.to_json())
            digest = signed.content_sha256()
            signed = self._register(session, signed, study_id)
            row = ReportSignoff(
                study_id=study_id,
                decision=action.value,
                narrative=signoff.edited_narrative,
                comment=signoff.comment,
                signer_id=principal.id,
                signer_name=signoff.username,
                analyses_sha256=digest,
                created_at=now,
            )
            session.add(row)
            self.audit.record(
                session,
                ctx,
                f"report.{action.value}",
                resource_type="study",
                resource_id=study_id,
                detail={"signoff_id": row.id, "sha256": digest},
            )
        return signed

    # --- building ----------------------------------------------------------------------
    def _build(self, ctx: RequestContext, session: Session, study_id: str) -> rm.Report:
        study = study_with_series(session, study_id)
        if study is None:
            raise NotFound("no such study")
        latest = self.analyze.latest_by_image(session, study_id)
        instances = {
            i.id: (series, i) for series in study.series for i in series.instances if i.status == "stored"
        }
        images: list[rm.ImageResult] = []
        for image_id, row in sorted(latest.items(), key=lambda item: item[1].created_at):
            if image_id not in instances or row.status != "ok":
                continue
            series, instance = instances[image_id]
            images.append(self._image(ctx, to_stored(row).result, series.series_uid, instance))
        if not images:
            raise NotFound("no AI result for this study yet")
        signoff_row = session.scalar(
            select(ReportSignoff)
            .where(ReportSignoff.study_id == study_id)
            .order_by(ReportSignoff.created_at.desc())
        )
        report = rm.Report(
            report_id=_report_id(study_id),
            study=_study(study),
            patient_pseudonym=_opaque(study.patient.pseudonym),
            images=tuple(images),
            created_at=max(row.created_at for row in latest.values()),
        )
        if signoff_row is None:
            return report
        action = rm.SignOffAction(signoff_row.decision)
        signoff = rm.SignOff(
            user_id=_opaque(signoff_row.signer_id),
            username=signoff_row.signer_name,
            signed_at=signoff_row.created_at,
            action=action,
            edited_narrative=signoff_row.narrative,
            comment=signoff_row.comment,
        )
        status = rm.ReportStatus.REJECTED if action is rm.SignOffAction.REJECTED else rm.ReportStatus.FINAL
        return rm.parse_report(report.model_copy(update={"status": status, "sign_off": signoff}).to_json())

    def _register(self, session: Session, report: rm.Report, study_id: str) -> rm.Report:
        """Log the report content's digest once; return the report with its ledger hash and index."""
        digest = report.content_sha256()
        index = session.scalar(
            select(LedgerEntry.idx).where(LedgerEntry.kind == REPORT, LedgerEntry.ref_id == digest)
        )
        if index is None:
            index = self.ledger.append(session, digest_entry(REPORT, digest, study_id, digest, self.clock()))
        return report.model_copy(update={"ledger_hash": digest, "ledger_index": int(index)})

    def _image(
        self, ctx: RequestContext, result: AnalysisResult, series_uid: str, instance: Instance
    ) -> rm.ImageResult:
        thumbnail: bytes | None = None
        try:
            thumbnail = b"".join(self.retrieve.download(ctx, instance.id, "thumbnail").chunks)
        except (NotFound, BlobNotFound, PermissionDenied):
            thumbnail = None
        provenance = result.provenance
        return rm.ImageResult(
            image_id=_opaque(instance.id),
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            series_instance_uid=series_uid,
            thumbnail_png=thumbnail,
            findings=tuple(
                rm.Finding(
                    description=f.description,
                    location=f.location,
                    confidence=f.confidence,
                    severity=rm.Severity(f.severity.value),
                )
                for f in result.findings
            ),
            risk_score=float(result.risk_score or 0),
            suggested_diagnosis=result.suggested_diagnosis,
            recommendations=tuple(result.recommendations),
            probabilities={k: v for k, v in result.label_probabilities.items() if v is not None},
            narrative=result.report_text,
            provenance=rm.Provenance(
                provider=provenance.provider,
                model=provenance.model,
                version=provenance.version,
                weights_sha256=provenance.weights_sha256,
            ),
            simulated=result.simulated,
        )


def _study(study: Study) -> rm.Study:
    return rm.Study(
        study_id=_opaque(study.id),
        study_instance_uid=study.study_uid,
        study_date=study.study_date,
        modalities=tuple(m for m in study.modalities.split(",") if m),
        accession_pseudonym=study.accession_pseudonym,
    )


def _report_id(study_id: str) -> str:
    return "R-" + hashlib.sha256(f"report:{study_id}".encode()).hexdigest()[:24]


def _opaque(value: str) -> str:
    """Opaque ids as the report model accepts them (OIDC subjects may contain other characters)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "._:-" else "-" for ch in value)[:64]
    return cleaned if cleaned[:1].isalnum() else "x" + cleaned[:63]
