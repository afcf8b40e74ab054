"""Schemas of the upload and job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class UploadResult(BaseModel):
    """The outcome for one uploaded object (fields of the original design, plus ids)."""

    file: str = Field(description="position in the request: '2', or '2/5' for member 5 of archive 2")
    status: str = Field(description="stored, duplicate, quarantined, rejected or pending")
    message: str
    image_id: str | None = None
    study_id: str | None = None
    series_id: str | None = None
    patient_pseudonym: str | None = None
    job_id: str | None = None
    deidentified: bool = False
    converted: bool = False
    encrypted: bool = False
    hash_registered: bool = False
    frames: int = 0
    timestamp: datetime | None = None
    error: str | None = Field(None, description="stable reason code when rejected")


class UploadBatch(BaseModel):
    batch_id: str
    summary: dict[str, int]
    files: list[UploadResult]


class JobPublic(BaseModel):
    id: str
    kind: str
    state: str
    step: str | None = Field(description="the step running, or the step that failed")
    attempt: int
    batch_id: str | None
    error_code: str | None
    error_detail: str | None
    result: dict[str, Any]
    timings_ms: dict[str, float]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retryable: bool = Field(
        False, description="failed with its encrypted input kept: an admin may retry or discard it"
    )


class JobPagePublic(BaseModel):
    items: list[JobPublic]
    total: int
    offset: int
    limit: int
