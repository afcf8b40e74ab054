"""AI analysis results and per-study diagnostic reports with their sign-off."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from irmsia.db.base import Base, new_id


class Analysis(Base):
    """One AI result for one image (an error result too). ``result`` is the canonical JSON."""

    __tablename__ = "analyses"
    __table_args__ = (
        Index("ix_analyses_study", "study_id", "created_at"),
        Index("ix_analyses_patient", "patient_pseudonym"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    patient_pseudonym: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # ok | error
    error_code: Mapped[str | None] = mapped_column(String(64))
    risk_score: Mapped[int | None] = mapped_column(Integer)
    simulated: Mapped[bool] = mapped_column(default=False)
    result: Mapped[str] = mapped_column(Text)
    result_sha256: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]


class ReportSignoff(Base):
    """A radiologist's decision on a study's AI report: confirmed, edited or rejected."""

    __tablename__ = "report_signoffs"
    __table_args__ = (
        Index("ix_report_signoffs_study", "study_id", "created_at"),
        # One sign-off per study's report: a second, concurrent one fails to insert.
        Index("uq_report_signoffs_study_id", "study_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(16))  # confirmed | edited | rejected
    narrative: Mapped[str | None] = mapped_column(Text)
    diagnosis: Mapped[str | None] = mapped_column(Text)
    # JSON: the analyses the signed report was built from (so it stays what was signed when
    # images are analysed again) and the changes made to their findings (see usecases/reports).
    analysis_ids: Mapped[str | None] = mapped_column(Text)
    finding_edits: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    signer_id: Mapped[str] = mapped_column(String(128))
    signer_name: Mapped[str] = mapped_column(String(128))
    analyses_sha256: Mapped[str] = mapped_column(String(64))  # what was signed
    created_at: Mapped[datetime]
