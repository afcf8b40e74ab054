"""Per-study diagnostic reports from AI results, their downloads, and radiologist sign-off.

A study's report is built on request from the newest AI result of each analysed image and
the study's latest sign-off. An unsigned report is "preliminary — AI-generated"; a
radiologist confirms, edits (narrative, diagnosis, findings removed or re-graded) or rejects
it, and the sign-off records who, when, the edits, the analyses signed and the SHA-256 of
the report content signed (registered in the ledger). A signed report is rebuilt from the
analyses it was signed with, so analysing the images again does not change it. Every step
is audited.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from irmsia.ai.schema import AnalysisResult
from irmsia.clock import Clock
from irmsia.db.analysis import Analysis, ReportSignoff
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Study
from irmsia.db.index import study_with_series
from irmsia.db.ledger import LedgerEntry
from irmsia.errors import Conflict, InvalidRequest, NotFound
from irmsia.ledger.entries import REPORT, digest_entry
from irmsia.ledger.service import Ledger
from irmsia.reports import model as rm
from irmsia.reports.amend import FindingEdit, apply_finding_edits
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


NARRATIVE_MAX = 10_000
DIAGNOSIS_MAX = 200
COMMENT_MAX = 4_000


@dataclass(frozen=True)
class _Built:
    """A report and the analyses it was built from (errors included)."""

    report: rm.Report
    sources: list[Analysis]


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

    def build(self, ctx: RequestContext, study_id: str, *, fmt: Format = "json") -> rm.Report:
        """The study's current report, its content digest registered in the ledger.

        The first time a given report content is produced, its SHA-256 is appended to the log
        (in the same transaction as the read's audit record), so the PDF can quote the ledger
        hash and index. ``NotFound`` when no image of the study has an AI result. The read is
        audited as ``report.read`` with the format (``fmt``) it is served in.
        """
        report = self._read(ctx, study_id, fmt)
        if report is None:
            raise NotFound("no AI result for this study yet")
        return report

    def current(self, ctx: RequestContext, study_id: str) -> rm.Report | None:
        """The report as ``build`` gives it (audited with format "summary"), or None while no
        image of the study has an AI result. ``NotFound`` for an unknown study."""
        return self._read(ctx, study_id, "summary")

    def _read(self, ctx: RequestContext, study_id: str, fmt: str) -> rm.Report | None:
        authorize(ctx.principal, Permission.READ_RESULTS)
        with transaction(self.sessions) as session:
            built = self._build(ctx, session, study_id)
            if built is None:
                return None
            report = self._register(session, built.report, study_id)
            self.audit.record(
                session,
                ctx,
                "report.read",
                resource_type="study",
                resource_id=study_id,
                detail={"status": report.status.value, "format": fmt},
            )
        return report

    def render(self, ctx: RequestContext, study_id: str, fmt: Format) -> RenderedReport:
        """The report as JSON, PDF, DICOM SR or a FHIR R4 bundle."""
        if fmt not in MEDIA_TYPES:
            raise InvalidRequest("format must be json, pdf, sr or fhir")
        report = self.build(ctx, study_id, fmt=fmt)
        if fmt == "json":
            content = report.to_json().encode()
        elif fmt == "pdf":
            from irmsia.reports.pdf import build_pdf

            content = build_pdf(report)
        elif fmt == "sr":
            from irmsia.reports.sr import build_sr

            content = build_sr(report)
        else:  # fhir
            from irmsia.reports.fhir import build_fhir_json

            content = build_fhir_json(report)
        return RenderedReport(report, MEDIA_TYPES[fmt], content)

    def sign(
        self,
        ctx: RequestContext,
        study_id: str,
        decision: str,
        *,
        narrative: str | None = None,
        comment: str | None = None,
        diagnosis: str | None = None,
        findings: Sequence[FindingEdit] = (),
    ) -> rm.Report:
        """A radiologist confirms, edits or rejects the study's preliminary AI report.

        An edit gives at least one of: a corrected ``narrative`` (the AI narrative unchanged
        does not count), the clinician's ``diagnosis``, or ``findings`` changes (remove a
        finding or change its severity; see ``irmsia.reports.amend``; changes to the value a
        finding already has are ignored). The signed report is the one built now, with the
        edits applied; it stays that report when the study's images are analysed again.
        ``InvalidRequest`` for a malformed sign-off, ``NotFound`` without an AI result,
        ``Conflict`` once the report is signed (one sign-off per report).
        """
        principal = authorize(ctx.principal, Permission.SIGN_REPORTS)
        action = _ACTIONS.get(decision)
        if action is None:
            raise InvalidRequest("decision must be confirm, edit or reject")
        narrative = _text(narrative, "narrative", NARRATIVE_MAX)
        diagnosis = _text(diagnosis, "diagnosis", DIAGNOSIS_MAX)
        comment = _text(comment, "comment", COMMENT_MAX)
        edits = list(findings)
        if action is not rm.SignOffAction.EDITED and (narrative or diagnosis or edits):
            raise InvalidRequest("a narrative, a diagnosis or finding changes are only given with an edit")
        now = self.clock()
        with transaction(self.sessions) as session:
            built = self._build(ctx, session, study_id)
            if built is None:
                raise NotFound("no AI result for this study yet")
            current = built.report
            if current.status is not rm.ReportStatus.PRELIMINARY:
                raise Conflict("the report is already signed; it cannot be signed again")
            amended = apply_finding_edits(current.images, edits)
            if narrative is not None and narrative == (current.conclusion or "").strip():
                narrative = None
            if action is rm.SignOffAction.EDITED and not (narrative or diagnosis or amended.amendments):
                raise InvalidRequest("an edit needs a corrected narrative, a diagnosis or a changed finding")
            signoff = rm.SignOff(
                user_id=_opaque(principal.id),
                username=principal.username[:64] or "unknown",
                signed_at=now,
                action=action,
                edited_narrative=narrative,
                edited_diagnosis=diagnosis,
                amendments=amended.amendments,
                comment=comment,
            )
            status = (
                rm.ReportStatus.REJECTED if action is rm.SignOffAction.REJECTED else rm.ReportStatus.FINAL
            )
            signed = current.model_copy(
                update={"images": amended.images, "status": status, "sign_off": signoff}
            )
            signed = rm.parse_report(signed.to_json())
            digest = signed.content_sha256()
            signed = self._register(session, signed, study_id)
            row = ReportSignoff(
                study_id=study_id,
                decision=action.value,
                narrative=signoff.edited_narrative,
                diagnosis=signoff.edited_diagnosis,
                analysis_ids=json.dumps([source.id for source in built.sources]),
                finding_edits=json.dumps([e.to_json() for e in amended.edits]) if amended.edits else None,
                comment=signoff.comment,
                signer_id=principal.id,
                signer_name=signoff.username,
                analyses_sha256=digest,
                created_at=now,
            )
            session.add(row)
            try:
                session.flush()
            except SAIntegrityError:
                # Another sign-off of this study committed first (one per study, by a unique index).
                raise Conflict("the report is already signed; it cannot be signed again") from None
            self.audit.record(
                session,
                ctx,
                f"report.{action.value}",
                resource_type="study",
                resource_id=study_id,
                detail={
                    "signoff_id": row.id,
                    "sha256": digest,
                    "edited": sorted(
                        name
                        for name, value in (
                            ("narrative", narrative),
                            ("diagnosis", diagnosis),
                            ("findings", amended.edits),
                        )
                        if value
                    ),
                },
            )
        return signed

    # --- building ----------------------------------------------------------------------
    def _build(self, ctx: RequestContext, session: Session, study_id: str) -> _Built | None:
        """The report now: from the newest result of each image, or, once signed, from the
        results that were signed, with the sign-off's edits. None without an ``ok`` result."""
        study = study_with_series(session, study_id)
        if study is None:
            raise NotFound("no such study")
        signoff_row = session.scalar(
            select(ReportSignoff)
            .where(ReportSignoff.study_id == study_id)
            .order_by(ReportSignoff.created_at.desc())
        )
        signed_ids = (
            json.loads(signoff_row.analysis_ids) if signoff_row and signoff_row.analysis_ids else None
        )
        if signed_ids is not None:
            rows: list[Analysis] = list(
                session.scalars(select(Analysis).where(Analysis.id.in_(signed_ids))).all()
            )
        else:
            rows = list(self.analyze.latest_by_image(session, study_id).values())
        sources = sorted(rows, key=lambda row: (row.created_at, row.id))
        instances = {
            i.id: (series, i) for series in study.series for i in series.instances if i.status == "stored"
        }
        shown = [row for row in sources if row.image_id in instances and row.status == "ok"]
        # The thumbnails are part of this read (audited once, as report.read), for those who
        # may see images; one query and no audit record per image.
        principal = ctx.principal
        thumbnails = (
            self.retrieve.thumbnails_in(session, [row.image_id for row in shown])
            if principal is not None and principal.can(Permission.READ_IMAGES)
            else {}
        )
        images: list[rm.ImageResult] = []
        for row in shown:
            series, instance = instances[row.image_id]
            images.append(
                self._image(to_stored(row).result, series.series_uid, instance, thumbnails.get(instance.id))
            )
        if not images:
            return None
        report = rm.Report(
            report_id=_report_id(study_id),
            study=_study(study),
            patient_pseudonym=_opaque(study.patient.pseudonym),
            images=tuple(images),
            created_at=max(row.created_at for row in sources),
        )
        if signoff_row is None:
            return _Built(report, sources)
        edits = [FindingEdit.from_json(item) for item in json.loads(signoff_row.finding_edits or "[]")]
        amended = apply_finding_edits(report.images, edits)
        action = rm.SignOffAction(signoff_row.decision)
        signoff = rm.SignOff(
            user_id=_opaque(signoff_row.signer_id),
            username=signoff_row.signer_name,
            signed_at=signoff_row.created_at,
            action=action,
            edited_narrative=signoff_row.narrative,
            edited_diagnosis=signoff_row.diagnosis,
            amendments=amended.amendments,
            comment=signoff_row.comment,
        )
        status = rm.ReportStatus.REJECTED if action is rm.SignOffAction.REJECTED else rm.ReportStatus.FINAL
        update = {"images": amended.images, "status": status, "sign_off": signoff}
        return _Built(rm.parse_report(report.model_copy(update=update).to_json()), sources)

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
        self, result: AnalysisResult, series_uid: str, instance: Instance, thumbnail: bytes | None
    ) -> rm.ImageResult:
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


def _text(value: str | None, field: str, limit: int) -> str | None:
    """A stripped free-text field, None when empty. ``InvalidRequest`` when over ``limit``."""
    text = value.strip() if value else ""
    if len(text) > limit:
        raise InvalidRequest(f"the {field} is longer than {limit} characters")
    return text or None
