"""Schemas of the ledger and blockchain endpoints. Hashes travel as standard base64."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator


class CheckpointPublic(BaseModel):
    size: int
    root_hash: str = Field(description="base64 of the 32-byte RFC 9162 root")
    note: str = Field(description="the C2SP signed checkpoint, verbatim")
    created_at: datetime


class CheckpointPagePublic(BaseModel):
    items: list[CheckpointPublic]
    total: int
    offset: int
    limit: int


class InclusionProofPublic(BaseModel):
    index: int
    size: int
    entry: str = Field(description="base64 of the canonical entry bytes")
    leaf_hash: str
    proof: list[str]
    root_hash: str
    checkpoint: str | None = Field(description="the signed checkpoint at this size, if one was signed")


class ConsistencyProofPublic(BaseModel):
    first: int
    second: int
    proof: list[str]
    first_root: str
    second_root: str
    first_checkpoint: str | None
    second_checkpoint: str | None


class ReceiptPublic(BaseModel):
    object_id: str
    index: int
    checkpoint_size: int
    receipt: dict[str, Any] = Field(
        description="the receipt JSON; check it offline with irmsia.ledger.verifier.verify_receipt"
    )


class AnchorPublic(BaseModel):
    id: str
    kind: str
    checkpoint_size: int
    status: str
    reference: str | None
    receipt: dict[str, Any]
    error: str | None
    created_at: datetime


class AnchorPagePublic(BaseModel):
    items: list[AnchorPublic]
    total: int
    offset: int
    limit: int


class VerificationCreate(BaseModel):
    """Scope of a verification: one study, a random sample of N objects, or all (the default)."""

    model_config = {"extra": "forbid"}

    study_id: str | None = Field(None, max_length=32)
    sample: int | None = Field(None, ge=1, le=1_000_000)
    all: bool = False

    @model_validator(mode="after")
    def _one_scope(self) -> VerificationCreate:
        if sum((self.study_id is not None, self.sample is not None, self.all)) > 1:
            raise ValueError("choose at most one of study_id, sample and all")
        return self


class MismatchPublic(BaseModel):
    kind: str
    detail: str
    index: int | None
    object_id: str | None
    checkpoint_size: int | None


class VerificationResult(BaseModel):
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
    mismatches: list[MismatchPublic]
    warnings: list[str]


class PublicKeyPublic(BaseModel):
    origin: str
    verifier_key: str = Field(description="C2SP signed-note verifier key: name+keyid+base64(0x01||key)")


class HashRecordPublic(BaseModel):
    log_index: int
    object_id: str | None
    kind: str | None
    frame: int | None
    sha256: str | None = Field(description="SHA-256 (hex) of the encrypted blob, as the log recorded it")
    size: int | None
    key_id: str | None
    time: str | None


class ImageHashesPublic(BaseModel):
    image_id: str
    records: list[HashRecordPublic]


class AccessRecordPublic(BaseModel):
    log_index: int
    event: dict[str, Any]


class ImageAccessLogPublic(BaseModel):
    image_id: str
    events: list[AccessRecordPublic]
