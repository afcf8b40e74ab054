"""Durable job records of the pipeline."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from irmsia.db.base import Base, new_id

MAX_ATTEMPTS = 3  # runs of a job before a retryable failure becomes final


class Job(Base):
    """One unit of pipeline work (e.g. ingesting one uploaded object).

    ``spool_key`` names the encrypted original in the blob store until the job ends;
    ``result`` and ``timings`` are JSON; ``error_detail`` is a PHI-free sentence.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"), Index("ix_jobs_batch", "batch_id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # pending | running | succeeded | failed
    step: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=MAX_ATTEMPTS)
    batch_id: Mapped[str | None] = mapped_column(String(32))
    submitted_by: Mapped[str | None] = mapped_column(String(128))
    spool_key: Mapped[str | None] = mapped_column(String(255))
    spool_key_id: Mapped[str | None] = mapped_column(String(128))
    spool_wrapped_key: Mapped[bytes | None]
    input_size: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[str] = mapped_column(Text, default="{}")
    result: Mapped[str] = mapped_column(Text, default="{}")
    timings: Mapped[str] = mapped_column(Text, default="{}")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
